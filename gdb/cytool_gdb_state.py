"""The debugger's memory: which Cython modules are known, and where they live in gdb.

Owns the registry of modules read from debug XML (by `cy-load` or found beside a
module's .so when gdb loads it), the lookups from C function names to Cython functions
and from Cython modules to gdb objfiles, and reading .pyx source lines.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional

import gdb  # type: ignore

from cytool_gdb_debuginfo import Function, Module, find_debug_info


class CyError(gdb.GdbError):
    """A message for the user, printed by gdb without a Python traceback."""


_modules: Dict[str, Module] = {}
_by_cname: Dict[str, Function] = {}
_load_listeners: List = []  # callables(Module), run when a module is registered
_source_cache: Dict[str, List[str]] = {}
default_source: Optional[str] = None  # the file `cy-break LINE` means before anything stops
# A module's .so whose symbols were added before the run only so that the TUI source
# window can show its .pyx; removed as soon as the process starts (see preload_symbols).
preloaded: Optional[str] = None


def modules() -> List[Module]:
    return list(_modules.values())


def on_module_registered(callback) -> None:
    _load_listeners.append(callback)


def load_debug_info(path: str, quiet: bool = False) -> List[Module]:
    """Read the debug XML found at `path` (build dir, cython_debug dir, .so or XML)."""
    global default_source
    found = find_debug_info(path)
    loaded: List[Module] = []
    for xml_path in found:
        try:
            module = Module(xml_path)
        except Exception as error:  # a broken XML must not break gdb
            if not quiet:
                print(f"cytool: cannot read {xml_path}: {error}")
            continue
        known = _modules.get(module.name)
        if known is not None and known.xml_path == module.xml_path:
            loaded.append(known)
            continue
        _modules[module.name] = module
        for function in module.functions:
            _by_cname[function.cname] = function
        if default_source is None:
            default_source = module.filename
        loaded.append(module)
        for callback in list(_load_listeners):
            callback(module)
    return loaded


def function_for_cname(name: Optional[str]) -> Optional[Function]:
    if not name:
        return None
    return _by_cname.get(name)


def module_named(name: str) -> Optional[Module]:
    return _modules.get(name)


def module_for_source(path: str) -> List[Module]:
    """Modules that have `path` (a full path, a relative path or a basename) among their sources."""
    return [m for m in _modules.values() if m.find_source(path) is not None]


def objfile_for(module: Module) -> Optional["gdb.Objfile"]:
    """The loaded shared object of this module, or None before Python imports it."""
    if preloaded is not None:
        return None  # only the stand-in is there: the module is not loaded in the process
    try:
        if gdb.selected_inferior().pid == 0:
            return None  # no process: gdb may still list the last run's libraries
    except gdb.error:
        return None
    build_dir = os.path.dirname(os.path.dirname(module.xml_path))
    fallback = None
    for objfile in gdb.objfiles():
        name = objfile.filename or ""
        base = os.path.basename(name)
        if not base.startswith(module.name + ".") or not base.endswith(".so"):
            continue
        if os.path.dirname(os.path.realpath(name)) == os.path.realpath(build_dir):
            return objfile
        fallback = fallback or objfile
    return fallback


def lookup_static(module: Module, name: str) -> Optional["gdb.Symbol"]:
    objfile = objfile_for(module)
    if objfile is None:
        return None
    try:
        symbol = objfile.lookup_static_symbol(name)
        if symbol is None:
            symbol = objfile.lookup_global_symbol(name)
    except (gdb.error, AttributeError):
        return None
    return symbol


def function_range(function: Function) -> Optional[tuple]:
    """(start, end) pc range of the function's C body, once its module is loaded."""
    symbol = lookup_static(function.module, function.cname)
    if symbol is None or symbol.addr_class != gdb.SYMBOL_LOC_BLOCK:
        return None
    block = symbol.value().address
    try:
        start = int(block)
        body = gdb.block_for_pc(start)
    except (gdb.error, RuntimeError):
        return None
    while body is not None and body.function is None:
        body = body.superblock
    if body is None:
        return None
    return (body.start, body.end)


def source_lines(path: str) -> List[str]:
    if path not in _source_cache:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                _source_cache[path] = handle.read().split("\n")
        except OSError:
            _source_cache[path] = []
    return _source_cache[path]


def source_line(path: str, line: int) -> str:
    lines = source_lines(path)
    if 1 <= line <= len(lines):
        return lines[line - 1]
    return ""


def module_so(module: Module) -> Optional[str]:
    """The built shared object next to the module's cython_debug directory."""
    build_dir = os.path.dirname(os.path.dirname(module.xml_path))
    try:
        names = sorted(os.listdir(build_dir))
    except OSError:
        return None
    for name in names:
        if name.startswith(module.name + ".") and name.endswith(".so"):
            return os.path.join(build_dir, name)
    return None


def preload_symbols(module: Module) -> bool:
    """Before the run, give gdb the module's symbols so `list` and the TUI can show its
    .pyx (gdb shows sources only through symbol tables). Removed when the process starts."""
    global preloaded
    if preloaded is not None:
        return True
    try:
        if gdb.selected_inferior().pid != 0:
            return False
    except gdb.error:
        return False
    path = module_so(module)
    if path is None:
        return False
    preloaded = path
    try:
        gdb.execute(f"add-symbol-file {path}", to_string=True)
    except gdb.error:
        preloaded = None
        return False
    return True


def drop_preloaded() -> None:
    global preloaded
    if preloaded is None:
        return
    path, preloaded = preloaded, None
    try:
        gdb.execute(f"remove-symbol-file {path}", to_string=True)
    except gdb.error:
        pass
