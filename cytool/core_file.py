"""What cytool reads from a core file itself: that it is one, and which program it is of.

A core written by the kernel or by gdb's `gcore` is an ELF file of type ET_CORE whose
PT_NOTE segments hold, among others, NT_PRPSINFO (the process's pid, short name
`pr_fname` and command line `pr_psargs`) and NT_FILE (every file mapped, with its
address range): the executable is the mapped file named like `pr_fname`, else the
first file mapped. Format facts from the System V gABI and Linux's
include/uapi/linux/elfcore.h and fs/binfmt_elf.c (fill_files_note). Only 64-bit
little-endian cores (x86-64, aarch64) are read.
"""
from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from cytool.errors import CytoolError

ET_CORE = 4
PT_NOTE = 4
NT_PRPSINFO = 3
NT_FILE = 0x46494C45
MAX_NOTES_BYTES = 64 << 20


@dataclass
class CoreInfo:
    """What a core says of its process: pid, short name, command line, mapped files."""

    pid: int = 0
    name: str = ""
    command_line: str = ""
    files: List[Tuple[int, str]] = field(default_factory=list)  # (start address, path), in note order

    def executable(self) -> Optional[str]:
        """The path of the program the core is of, as mapped when it was written."""
        if not self.files:
            return None
        if self.name:
            for _, path in self.files:
                if os.path.basename(path)[:15] == self.name[:15]:
                    return path
        return min(self.files)[1]


def read_core(path: Path) -> CoreInfo:
    """The core's notes; CytoolError when the file is missing, not ELF or not a core."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the open
            raise CytoolError(f"{path}: not a core file (not a regular file)")
        with open(path, "rb") as handle:
            header = handle.read(64)
            if len(header) < 64 or header[:4] != b"\x7fELF":
                raise CytoolError(f"{path}: not a core file (not an ELF file)",
                                  hint="give a core written by the kernel or by gdb's gcore")
            if header[4] != 2 or header[5] != 1:
                raise CytoolError(f"{path}: only 64-bit little-endian core files are read")
            e_type, = struct.unpack_from("<H", header, 16)
            if e_type != ET_CORE:
                kind = {1: "a relocatable object", 2: "an executable", 3: "a shared object"}.get(e_type, "not a core")
                raise CytoolError(f"{path}: not a core file (it is {kind})",
                                  hint="cytool stack --core CORE [--executable PYTHON]: the core comes first")
            size = os.fstat(handle.fileno()).st_size
            needed = _segments_end(handle, header)
            if needed > size:
                raise CytoolError(f"{path}: the core is cut short: {size:,} of the {needed:,} bytes its segments "
                                  "need (a core size limit, `ulimit -c`, or a full disk cut it off)",
                                  hint="write the core again (ulimit -c unlimited, or gcore PID)")
            info = CoreInfo()
            for data in _note_segments(handle, header):
                _read_notes(data, info)
            return info
    except FileNotFoundError:
        raise CytoolError(f"{path}: no such core file")
    except IsADirectoryError:
        raise CytoolError(f"{path}: is a directory, not a core file")
    except OSError as error:
        raise CytoolError(f"{path}: cannot read the core file: {error.strerror or error}")


def _program_headers(handle, header: bytes) -> List[bytes]:
    """The core's program header entries, as bytes (none for a table that makes no sense)."""
    phoff, = struct.unpack_from("<Q", header, 32)
    phentsize, phnum = struct.unpack_from("<HH", header, 54)
    if phentsize < 56 or phnum == 0 or phnum > 65535:
        return []
    handle.seek(phoff)
    table = handle.read(phentsize * phnum)
    return [table[i * phentsize:(i + 1) * phentsize] for i in range(phnum)]


def _segments_end(handle, header: bytes) -> int:
    """The file size the core's program headers and segments need, in bytes."""
    phoff, = struct.unpack_from("<Q", header, 32)
    phentsize, phnum = struct.unpack_from("<HH", header, 54)
    end = phoff + phentsize * phnum if 0 < phnum <= 65535 else 64
    for entry in _program_headers(handle, header):
        if len(entry) < 56:
            break
        offset, = struct.unpack_from("<Q", entry, 8)
        file_size, = struct.unpack_from("<Q", entry, 32)
        end = max(end, offset + file_size)
    return end


def _note_segments(handle, header: bytes) -> List[bytes]:
    found = []
    for entry in _program_headers(handle, header):
        if len(entry) < 56 or struct.unpack_from("<I", entry, 0)[0] != PT_NOTE:
            continue
        offset, = struct.unpack_from("<Q", entry, 8)
        size, = struct.unpack_from("<Q", entry, 32)
        handle.seek(offset)
        found.append(handle.read(min(size, MAX_NOTES_BYTES)))
    return found


def _read_notes(data: bytes, info: CoreInfo) -> None:
    position = 0
    while position + 12 <= len(data):
        namesz, descsz, kind = struct.unpack_from("<III", data, position)
        name_start = position + 12
        desc_start = name_start + ((namesz + 3) & ~3)
        desc_end = desc_start + descsz
        if desc_end > len(data):
            return
        name = data[name_start:name_start + namesz].rstrip(b"\0")
        desc = data[desc_start:desc_end]
        if name == b"CORE" and kind == NT_PRPSINFO and len(desc) >= 136:
            info.pid, = struct.unpack_from("<i", desc, 24)
            info.name = desc[40:56].split(b"\0", 1)[0].decode(errors="replace")
            info.command_line = desc[56:136].split(b"\0", 1)[0].decode(errors="replace").strip()
        elif name == b"CORE" and kind == NT_FILE and len(desc) >= 16:
            info.files = _file_note(desc)
        position = (desc_end + 3) & ~3


def _file_note(desc: bytes) -> List[Tuple[int, str]]:
    count, _page_size = struct.unpack_from("<QQ", desc, 0)
    table_end = 16 + 24 * count
    if count > 1 << 20 or table_end > len(desc):
        return []
    names = desc[table_end:].split(b"\0")
    files = []
    for index in range(count):
        start, = struct.unpack_from("<Q", desc, 16 + 24 * index)
        if index < len(names):
            files.append((start, names[index].decode(errors="surrogateescape")))
    return files
