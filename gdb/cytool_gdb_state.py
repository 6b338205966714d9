"""The debugger's memory: which Cython modules are known, and where they live in gdb.

Owns the registry of modules read from debug XML (by `cy-load`, or found near a module's
.so when gdb loads it: `gdb.events.new_objfile`), which loaded shared object is which
module (dotted package names included), the lookups from C function names to Cython
functions, the session's settings (batch mode) and the failures a batch run must end on.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional

import gdb  # type: ignore

import cytool_gdb_foreign as foreign
from cytool_gdb_debuginfo import (Function, Module, c_name, debug_info_for_shared_object, debug_info_from_index,
                                  find_debug_info, source_line, source_lines)

__all__ = ["source_line", "source_lines"]


class CyError(gdb.GdbError):
    """A message for the user, printed by gdb without a Python traceback."""


_modules: Dict[str, Module] = {}
_by_cname: Dict[str, Function] = {}
_objfile_of: Dict[str, str] = {}  # module name -> file name of its loaded shared object
_load_listeners: List = []  # callables(Module), run when a module is registered
index_dirs: List[str] = []  # module index folders (`set cy-module-index`), searched by build-id
default_source: Optional[str] = None  # the file `cy-break LINE` means before anything stops
# A module's .so whose symbols were added before the run only so that the TUI source
# window can show its .pyx; removed as soon as the process starts (see preload_symbols).
preloaded: Optional[str] = None

# `set cy-batch on` (cytool debug --batch): a refused breakpoint ends gdb at once and a
# breakpoint that matched nothing makes its exit status non-zero.
batch = False
batch_failure: Optional[str] = None


def modules() -> List[Module]:
    return list(_modules.values())


def on_module_registered(callback) -> None:
    _load_listeners.append(callback)


def register(module: Module) -> Module:
    """Add a module read from its XML (a newer XML of the same module replaces the old)."""
    global default_source
    known = _modules.get(module.name)
    if known is module or (known is not None and not is_foreign(module) and known.xml_path == module.xml_path):
        return known
    _modules[module.name] = module
    for cname, function in module.by_cname.items():
        _by_cname[cname] = function
    if default_source is None and not is_foreign(module):
        default_source = module.filename
    for callback in list(_load_listeners):
        callback(module)
    return module


def load_debug_info(path: str, quiet: bool = False) -> List[Module]:
    """Read the debug XML found at `path` (build dir, cython_debug dir, .so or XML)."""
    loaded: List[Module] = []
    for xml_path in find_debug_info(path):
        module = _read(xml_path, quiet)
        if module is not None:
            loaded.append(register(module))
    return loaded


def _read(xml_path: str, quiet: bool) -> Optional[Module]:
    for module in _modules.values():
        if module.xml_path == os.path.abspath(xml_path):
            return module
    try:
        return Module(xml_path)
    except Exception as error:  # a broken XML must not break gdb
        if not quiet:
            print(f"cytool: cannot read {xml_path}: {error}")
        return None


def module_loaded(so_path: str, build_id: Optional[str] = None,
                  objfile: Optional["gdb.Objfile"] = None) -> Optional[Module]:
    """A shared object was loaded: which Cython module is it? Its debug XML is looked
    up in the module index by build-id, else near the .so (and read if new); else a
    known module of that name is taken; else, for a Cython module built without the
    XML (a wheel, a plain setuptools build), it is described from its symbols and its
    generated C file (cytool_gdb_foreign)."""
    real = os.path.realpath(so_path)
    short = os.path.basename(real).split(".", 1)[0]
    module = None
    xml_path = debug_info_from_index(index_dirs, build_id) or debug_info_for_shared_object(so_path)
    if xml_path is not None:
        module = _read(xml_path, quiet=True)
    if module is None:
        module = _known_module_for(real, short)
        if module is not None and is_foreign(module) and not module.describes(real):
            module = None  # another build of that name, or a rebuild: describe this one
    if module is None:
        module = _describe_foreign(real, objfile)
    if module is None:
        return None
    _objfile_of[module.name] = real
    return register(module)


def is_foreign(module: Optional[Module]) -> bool:
    """A module known without debug XML (cytool_gdb_foreign)."""
    return getattr(module, "foreign", False)


def _describe_foreign(so_path: str, objfile: Optional["gdb.Objfile"]) -> Optional[Module]:
    short = os.path.basename(so_path).split(".", 1)[0]
    dwarf_paths = []
    anchors = []
    if objfile is not None:
        try:
            symbol = objfile.lookup_global_symbol("PyInit_" + short)
        except (gdb.error, RuntimeError, AttributeError):
            symbol = None
        if symbol is not None and symbol.symtab is not None:
            try:
                dwarf_paths.append(symbol.symtab.fullname())
                anchors.append(os.path.dirname(symbol.symtab.fullname()))
            except (gdb.error, RuntimeError):
                pass
    try:
        return foreign.describe(so_path, dwarf_paths, anchors)
    except Exception as error:  # an odd file must not break gdb
        print(f"cytool: cannot read {so_path} as a Cython module: {error}")
        return None


def source_text(path: str, line: int) -> str:
    """A source line's text: from the file, else as a module without debug XML quotes it
    in its C file's position comments (a .pyx that is not on this machine)."""
    text = source_line(path, line)
    if text or not path:
        return text
    for module in _modules.values():
        if is_foreign(module):
            text = module.source_text(path, line)
            if text:
                return text
    return ""


def real_source(module: Module, path: str) -> str:
    """`path` if it exists, else the module's source file of that name (the one sharing
    the longest tail of folders with it), else `path`."""
    if not path or os.path.isfile(path):
        return path
    base = os.path.basename(path)
    same = [s for s in module.sources if os.path.basename(s) == base and os.path.isfile(s)]
    if not same:
        return path
    parts = path.split(os.sep)

    def shared_tail(candidate: str) -> int:
        count = 0
        for mine, theirs in zip(reversed(parts), reversed(candidate.split(os.sep))):
            if mine != theirs:
                break
            count += 1
        return count

    return max(same, key=shared_tail)


def map_source_folders(module: Module) -> None:
    """Let gdb's own `list` and TUI source window find a module's .pyx files when the line
    table names them where they are not (a src/ layout compiled from the project root
    with `#line "pkg/mod.pyx"`): a `set substitute-path` rule per such folder."""
    if is_foreign(module) or not module.filename:
        return
    for path in module.sources:
        if not os.path.isfile(path):
            continue
        try:
            sals = gdb.decode_line(f"{os.path.basename(path)}:1")[1] or ()
        except gdb.error:
            continue
        for sal in sals:
            if sal.symtab is None:
                continue
            try:
                seen = sal.symtab.fullname()
            except gdb.error:
                continue
            if seen == path or os.path.isfile(seen) or os.path.basename(seen) != os.path.basename(path):
                continue
            if real_source(module, seen) != path:
                continue
            old, new = os.path.dirname(seen), os.path.dirname(path)
            if (old, new) not in _substitutions:
                _substitutions.add((old, new))
                try:
                    gdb.execute(f"set substitute-path {old} {new}", to_string=True)
                except gdb.error:
                    pass
            break


_substitutions: set = set()


def _known_module_for(real: str, short: str) -> Optional[Module]:
    """A module read earlier (cy-load) that this .so is: same short name, and its
    package spelled by the directories above the .so when it is dotted."""
    directories = os.path.dirname(real).split(os.sep)
    matches = []
    for module in _modules.values():
        if module.short_name != short:
            continue
        if module.package and directories[-len(module.package):] != module.package:
            continue
        matches.append(module)
    if len(matches) > 1:  # one built in this directory wins
        same = [m for m in matches if os.path.dirname(os.path.dirname(m.xml_path)) == os.path.dirname(real)]
        matches = same or matches
    return matches[0] if matches else None


def register_function(function: Function) -> None:
    """A function a module learnt after it was registered (cytool_gdb_foreign.adopt)."""
    _by_cname[function.cname] = function


def function_for_cname(name: Optional[str]) -> Optional[Function]:
    """The Cython function a C function (a frame's name) runs, if any: its body, or for
    a module without debug XML also its Python wrapper or a clone gcc made of it. `name`
    as gdb gives it (a C++ signature is dropped: cytool_gdb_debuginfo.c_name)."""
    name = c_name(name)
    if not name:
        return None
    found = _by_cname.get(name)
    if found is not None or not name.startswith("__pyx_"):
        return found
    for module in _modules.values():
        if is_foreign(module):
            found = module.function_for(name)
            if found is not None:
                _by_cname[name] = found
                return found
    return None


def module_named(name: str) -> Optional[Module]:
    return _modules.get(name)


def module_for_source(path: str) -> List[Module]:
    """Modules that have `path` (a full path, a relative path or a basename) among their sources."""
    return [m for m in _modules.values() if m.find_source(path) is not None]


def process_running() -> bool:
    try:
        return gdb.selected_inferior().pid != 0
    except gdb.error:
        return False


def objfile_for(module: Module) -> Optional["gdb.Objfile"]:
    """The loaded shared object of this module, or None before Python imports it."""
    if preloaded is not None or not process_running():
        return None  # no process (gdb may still list the last run's libraries), or only the stand-in
    bound = _objfile_of.get(module.name)
    for objfile in gdb.objfiles():
        name = objfile.filename or ""
        if not name.endswith(".so") or not objfile.is_valid():
            continue
        real = _realpaths.get(name)
        if real is None:
            real = _realpaths[name] = os.path.realpath(name)
        if bound is not None:
            if real == bound:
                return objfile
            continue
        if _known_module_for(real, os.path.basename(real).split(".", 1)[0]) is module:
            return objfile
    return None


def forget_objfiles() -> None:
    """The process exited: the next run loads (and binds) its shared objects again."""
    _objfile_of.clear()
    _realpaths.clear()


_realpaths: Dict[str, str] = {}  # an objfile's file name -> its real path (objfile_for)


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


def function_block(function: Function) -> Optional["gdb.Block"]:
    """The block of the function's out-of-line C body, or None (not loaded, or inlined
    into its callers everywhere by an optimising build)."""
    symbol = lookup_static(function.module, function.cname)
    if symbol is None or symbol.addr_class != gdb.SYMBOL_LOC_BLOCK:
        return None
    try:
        start = int(symbol.value().address)
        body = gdb.block_for_pc(start)
    except (gdb.error, RuntimeError):
        return None
    while body is not None and body.function is None:
        body = body.superblock
    return body


def function_range(function: Function) -> Optional[tuple]:
    """(start, end) pc range of the function's C body, once its module is loaded."""
    body = function_block(function)
    return None if body is None else (body.start, body.end)


def module_so(module: Module) -> Optional[str]:
    """The built shared object next to the module's cython_debug directory."""
    build_dir = os.path.dirname(os.path.dirname(module.xml_path))
    candidates = [build_dir, os.path.join(build_dir, *module.package)] if module.package else [build_dir]
    for directory in candidates:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            if name.startswith(module.short_name + ".") and name.endswith(".so"):
                return os.path.join(directory, name)
    return None


def preload_symbols(module: Module) -> bool:
    """Before the run, give gdb the module's symbols so `list` and the TUI can show its
    .pyx (gdb shows sources only through symbol tables). Removed when the process starts."""
    global preloaded
    if preloaded is not None:
        return True
    if process_running():
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


def fail_batch(reason: str) -> None:
    """Remember why a batch run must end with a non-zero status (first reason wins)."""
    global batch_failure
    if batch and batch_failure is None:
        batch_failure = reason


def end_batch_if_failed() -> None:
    """In batch mode, after a failure: end gdb now with exit status 1."""
    if batch and batch_failure is not None:
        print(f"cytool: ending the batch run: {batch_failure}")
        gdb.execute("set confirm off", to_string=True)
        gdb.execute("quit 1")
