"""Reading a live process's libraries' symbols before gdb attaches, so that the process is
stopped only while its threads' stacks are read.

Owns reading /proc/PID/maps (which ELF file is mapped where), loading each shared
object's symbols into gdb at the load bias the maps give (`add-symbol-file -o`), with
`auto-solib-add` off so that attaching does not read them again, naming the Cython
modules among them (cytool_gdb_state), and, once attached, reading the libraries gdb
lists that were not preloaded (one loaded between reading the maps and attaching, or
one whose file could not be read): `sharedlibrary` for just those. gdb itself always
reads libc and libpthread at attach (libthread_db needs them as shared libraries), so
they are left to it. Standard library only; runs inside gdb's embedded Python.
"""
from __future__ import annotations

import os
import re
import struct
from typing import Dict, List, Optional, Set

import gdb  # type: ignore

import cytool_gdb_state as state

PT_LOAD = 1
ET_DYN = 3
PAGE = 0x1000
# what gdb reads at attach whatever auto-solib-add says (gdb's libpthread_name_p)
_THREAD_LIBRARIES = ("/libpthread", "/libc.")
# a library of a process in another mount namespace (a container) is listed as target:/path
_SOLIB_ROW = re.compile(r"^\s*(?:0x[0-9a-f]+\s+0x[0-9a-f]+\s+)?(Yes|No)(?: \(\*\))?\s+(?:target:)?(/.*?)\s*$")


def mapped_objects(pid: int) -> Dict[str, int]:
    """{real path: load bias (the address its vaddr 0 is mapped at)} of the shared objects
    mapped in process `pid` as code, once (not its executable, not deleted files, not
    libc/libpthread); {} when the maps cannot be read."""
    try:
        exe = os.path.realpath(f"/proc/{pid}/exe")
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as handle:
            rows = handle.read().splitlines()
    except OSError:
        return {}
    starts: Dict[str, List[int]] = {}
    runs_code: Set[str] = set()
    for row in rows:
        parts = row.split(None, 5)
        if len(parts) < 6 or not parts[5].startswith("/") or parts[5].endswith(" (deleted)"):
            continue
        path = parts[5]
        if path == exe or any(mark in path for mark in _THREAD_LIBRARIES):
            continue
        if "x" in parts[1]:
            runs_code.add(path)
        if int(parts[2], 16) == 0:
            starts.setdefault(path, []).append(int(parts[0].split("-", 1)[0], 16))
    found: Dict[str, int] = {}
    for path, addresses in starts.items():
        if len(addresses) != 1 or path not in runs_code:
            continue  # mapped twice, or as data only: which mapping is the load is gdb's to say
        first = first_segment_vaddr(path)
        if first is not None:
            found[path] = addresses[0] - first
    return found


def first_segment_vaddr(path: str) -> Optional[int]:
    """The page-aligned vaddr of a shared object's first PT_LOAD segment (the one mapped at
    file offset 0); None for a file that is not an ELF shared object."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(64)
            if len(header) < 52 or header[:4] != b"\x7fELF" or header[5] not in (1, 2):
                return None
            wide = header[4] == 2
            order = "<" if header[5] == 1 else ">"
            if struct.unpack_from(order + "H", header, 16)[0] != ET_DYN:
                return None
            if wide:
                table, = struct.unpack_from(order + "Q", header, 32)
                entry_size, count = struct.unpack_from(order + "HH", header, 54)
            else:
                table, = struct.unpack_from(order + "I", header, 28)
                entry_size, count = struct.unpack_from(order + "HH", header, 42)
            handle.seek(table)
            headers = handle.read(entry_size * count)
    except (OSError, struct.error):
        return None
    for index in range(count):
        at = index * entry_size
        try:
            if wide:
                kind, _, _, vaddr = struct.unpack_from(order + "IIQQ", headers, at)
            else:
                kind, _, vaddr = struct.unpack_from(order + "III", headers, at)
        except struct.error:
            return None
        if kind == PT_LOAD:
            return vaddr & ~(PAGE - 1)
    return None


def preload(pid: int) -> Set[str]:
    """Load the symbols of process `pid`'s shared objects before attaching (the process runs
    on meanwhile) and name its Cython modules; the real paths loaded."""
    gdb.execute("set auto-solib-add off", to_string=True)
    loaded: Set[str] = set()
    for path, bias in mapped_objects(pid).items():
        try:
            gdb.execute(f"add-symbol-file {_quoted(path)} -o {bias:#x}", to_string=True)
        except gdb.error:
            continue  # left to gdb's own reading once attached
        loaded.add(path)
        objfile = _objfile_named(path)
        module = state.module_loaded(path, getattr(objfile, "build_id", None), objfile)
        if module is not None:
            state.map_source_folders(module)
    return loaded


def read_the_rest(preloaded: Set[str]) -> None:
    """Attached: read the symbols of the shared libraries gdb lists that were not preloaded."""
    try:
        listing = gdb.execute("info sharedlibrary", to_string=True)
    except gdb.error:
        return
    for row in listing.splitlines():
        match = _SOLIB_ROW.match(row)
        if match is None or match.group(1) == "Yes":
            continue
        name = match.group(2)
        if os.path.realpath(name) in preloaded:
            continue
        if not os.path.exists(name) and not os.path.exists(f"/proc/{gdb.selected_inferior().pid}/root{name}"):
            continue  # in no mount namespace we can see (gdb reads the process's own through its root)
        try:
            gdb.execute(f"sharedlibrary {re.escape(name)}$", to_string=True)
        except gdb.error:
            pass  # gdb said why on stderr; that library's frames show as addresses


def _objfile_named(path: str) -> Optional["gdb.Objfile"]:
    for objfile in reversed(gdb.objfiles()):
        if objfile.filename and os.path.realpath(objfile.filename) == path:
            return objfile
    return None


def _quoted(path: str) -> str:
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'
