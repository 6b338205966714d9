"""The one fact cytool reads from ELF files in Python: a module's GNU build-id (the
NT_GNU_BUILD_ID note the linker writes with --build-id, on by default on Debian's gcc).

Format facts from the ELF specification (System V gABI, "Note Section") and binutils'
include/elf/common.h (NT_GNU_BUILD_ID = 3, owner "GNU"). Only 64-bit little-endian
objects (x86-64, aarch64 on Linux) are read; others give None.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Optional

NT_GNU_BUILD_ID = 3
PT_NOTE = 4
MAX_NOTES_BYTES = 1 << 20


def build_id(path: Path) -> Optional[str]:
    """The build-id of an ELF shared object as lowercase hex, or None (not ELF64 LE, no
    note, unreadable). Reads the program headers and PT_NOTE segments only."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(64)
            if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
                return None
            phoff, = struct.unpack_from("<Q", header, 32)
            phentsize, phnum = struct.unpack_from("<HH", header, 54)
            if phentsize < 56 or phnum == 0 or phnum > 4096:
                return None
            handle.seek(phoff)
            table = handle.read(phentsize * phnum)
            for index in range(phnum):
                entry = table[index * phentsize:(index + 1) * phentsize]
                if len(entry) < 56:
                    return None
                p_type, = struct.unpack_from("<I", entry, 0)
                if p_type != PT_NOTE:
                    continue
                offset, = struct.unpack_from("<Q", entry, 8)
                size, = struct.unpack_from("<Q", entry, 32)
                handle.seek(offset)
                found = _scan_notes(handle.read(min(size, MAX_NOTES_BYTES)))
                if found:
                    return found
    except OSError:
        return None
    return None


def _scan_notes(data: bytes) -> Optional[str]:
    position = 0
    while position + 12 <= len(data):
        namesz, descsz, note_type = struct.unpack_from("<III", data, position)
        position += 12
        name = data[position:position + namesz]
        position += (namesz + 3) & ~3
        desc = data[position:position + descsz]
        position += (descsz + 3) & ~3
        if note_type == NT_GNU_BUILD_ID and name.rstrip(b"\0") == b"GNU" and desc:
            return desc.hex()
    return None
