"""The symbol names of a shared object, read from its ELF file without gdb.

Owns reading `.symtab` (every function and variable, static ones too, unless the file
was stripped) and `.dynsym` (what it exports: `PyInit_<module>`) of a 32- or 64-bit,
little- or big-endian ELF file, and a quick look for the marks a Cython module leaves.
gdb's Python API cannot list an objfile's minimal symbols, and a module built without
`-g` has nothing else. Layouts from the System V gABI ("Sections", "Symbol Table").
Standard library only: this runs inside gdb's embedded Python, and nothing here
touches gdb, so it can be tested on its own.
"""
from __future__ import annotations

import mmap
import struct
from typing import Dict, List, NamedTuple, Optional

SHT_SYMTAB = 2
SHT_DYNSYM = 11
STT_OBJECT = 1
STT_FUNC = 2
MAX_SYMBOLS = 2_000_000  # a guard against a corrupt section size


class Symbol(NamedTuple):
    name: str
    kind: int  # STT_FUNC, STT_OBJECT, ...
    value: int  # address relative to the object's load base
    size: int  # bytes
    defined: bool  # False for an undefined (imported) symbol


class _Layout(NamedTuple):
    endian: str
    is_64: bool


def _layout(data: bytes) -> Optional[_Layout]:
    if len(data) < 52 or data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        return None
    return _Layout("<" if data[5] == 1 else ">", data[4] == 2)


def _sections(data, layout: _Layout) -> List[tuple]:
    """[(name offset, type, offset, size, link, entry size)] of every section."""
    e = layout.endian
    if layout.is_64:
        shoff, = struct.unpack_from(e + "Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", data, 0x3A)
        entry, minimum = e + "IIQQQQIIQQ", 64
    else:
        shoff, = struct.unpack_from(e + "I", data, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", data, 0x2E)
        entry, minimum = e + "IIIIIIIIII", 40
    if shoff == 0 or shentsize < minimum or shoff + shentsize * shnum > len(data):
        return []
    sections = []
    for index in range(shnum):
        name, kind, _flags, _addr, offset, size, link, _info, _align, entsize = struct.unpack_from(
            entry, data, shoff + index * shentsize)
        sections.append((name, kind, offset, size, link, entsize))
    return sections


def _string(data, start: int, end: int) -> str:
    stop = data.find(b"\0", start, end)
    return bytes(data[start:stop if stop >= 0 else end]).decode("utf-8", "replace")


def _symbols_of(data, layout: _Layout, sections: List[tuple], wanted_type: int) -> List[Symbol]:
    e = layout.endian
    found: List[Symbol] = []
    for _name, kind, offset, size, link, entsize in sections:
        if kind != wanted_type or not 0 <= link < len(sections):
            continue
        str_offset, str_size = sections[link][2], sections[link][3]
        if offset + size > len(data) or str_offset + str_size > len(data):
            continue
        if layout.is_64:
            fmt, width = e + "IBBHQQ", 24
        else:
            fmt, width = e + "IIIBBH", 16
        entsize = entsize or width
        if entsize < width:
            continue
        count = min(size // entsize, MAX_SYMBOLS)
        for index in range(1, count):  # entry 0 is the null symbol
            fields = struct.unpack_from(fmt, data, offset + index * entsize)
            if layout.is_64:
                name, info, _other, shndx, value, symbol_size = fields
            else:
                name, value, symbol_size, info, _other, shndx = fields
            if name == 0 or name >= str_size:
                continue
            found.append(Symbol(_string(data, str_offset + name, str_offset + str_size), info & 0xF, value,
                                symbol_size, shndx != 0))
    return found


def read_symbols(path: str, dynamic: bool = False) -> List[Symbol]:
    """The symbols of `.symtab` (dynamic=False) or `.dynsym` (dynamic=True); [] for a
    file that cannot be read, is not ELF, or has no such table (a stripped `.symtab`)."""
    try:
        with open(path, "rb") as handle:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                layout = _layout(data[:64])
                if layout is None:
                    return []
                return _symbols_of(data, layout, _sections(data, layout), SHT_DYNSYM if dynamic else SHT_SYMTAB)
    except (OSError, ValueError, struct.error):
        return []


def function_names(path: str) -> Dict[str, int]:
    """{name: address} of the functions the object defines (`.symtab`, else `.dynsym`)."""
    symbols = read_symbols(path) or read_symbols(path, dynamic=True)
    return {s.name: s.value for s in symbols if s.kind == STT_FUNC and s.defined}


def defined_names(path: str) -> List[str]:
    """Every name the object defines, functions and variables (`.symtab`, else `.dynsym`)."""
    symbols = read_symbols(path) or read_symbols(path, dynamic=True)
    return [s.name for s in symbols if s.defined]


CYTHON_MARKS = (b"__pyx_", b"_cython_", b"cython_function_or_method")


def looks_like_cython(path: str) -> bool:
    """True for an extension module Cython generated: it exports `PyInit_<name>` and
    carries Cython's names (`__pyx_` symbols, or the `_cython_3_x` shared type module's
    name in its strings, which stripped modules keep)."""
    short = path.rsplit("/", 1)[-1].split(".", 1)[0]
    if not any(s.name == "PyInit_" + short for s in read_symbols(path, dynamic=True)):
        return False
    try:
        with open(path, "rb") as handle:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return any(data.find(mark) >= 0 for mark in CYTHON_MARKS)
    except (OSError, ValueError):
        return False
