"""Cython names to values: the translation behind cy-print, cy-set, cy-locals, $cy_value.

Owns how a Cython name in the selected Cython frame becomes a gdb value: a local or
argument (its C name from the XML), a closure variable (`__pyx_cur_scope->...`), a
C-level module global (a static variable of the module), or a Python-level module
global (an entry of the module's dict); and how an expression over such names is
rewritten into C for gdb to evaluate. Also how values print: Python objects as their
repr, everything else as gdb prints C.
"""
from __future__ import annotations

import re
from typing import List, Optional, Tuple

import gdb  # type: ignore

import cytool_gdb_pyobject as pyobject
import cytool_gdb_state as state
from cytool_gdb_debuginfo import Function, Local, Module
from cytool_gdb_frames import cython_function, selected_cython_frame

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYWORDS = {"sizeof", "int", "long", "char", "double", "float", "unsigned", "signed", "short", "void", "struct"}


def module_dict(module: Module) -> Optional["gdb.Value"]:
    """The module's `__dict__` as a PyObject pointer, read from Cython's module state."""
    symbol = state.lookup_static(module, "__pyx_mstate_global_static")
    candidates = []
    if symbol is not None:
        candidates.append(lambda: symbol.value()["__pyx_d"])
    for name in ("__pyx_d", "__pyx_mstate_global"):
        other = state.lookup_static(module, name)
        if other is not None:
            if name == "__pyx_d":
                candidates.append(lambda other=other: other.value())
            else:
                candidates.append(lambda other=other: other.value().dereference()["__pyx_d"])
    for candidate in candidates:
        try:
            value = candidate()
            if int(value.cast(gdb.lookup_type("unsigned long"))) != 0:
                return value
        except gdb.error:
            continue
    return None


def global_value(module: Module, name: str) -> Optional["gdb.Value"]:
    """A module global: the C static if Cython made one, else the entry in the module dict."""
    local = module.globals.get(name)
    if local is not None:
        symbol = state.lookup_static(module, local.cname)
        if symbol is not None and symbol.addr_class != gdb.SYMBOL_LOC_BLOCK:
            try:
                return symbol.value()
            except gdb.error:
                pass
    dictionary = module_dict(module)
    if dictionary is None:
        return None
    return pyobject.dict_lookup(dictionary, name)


def _frame_and_function() -> Tuple["gdb.Frame", Function]:
    frame = selected_cython_frame()
    function = cython_function(frame)
    assert function is not None
    return frame, function


def local_named(function: Function, name: str) -> Optional[Local]:
    local = function.locals.get(name)
    if local is not None:
        return local
    if name == "self" or name in function.arguments:
        return Local(name, f"__pyx_v_{name}", name, "PythonObject", function.lineno)
    return None


def lookup(name: str) -> Tuple[str, Optional["gdb.Value"], Optional[str]]:
    """(kind, value, cname) of a Cython name in the selected Cython frame."""
    frame, function = _frame_and_function()
    local = local_named(function, name)
    if local is not None:
        try:
            if "->" not in local.cname:  # a plain C variable of the frame
                return "local", frame.read_var(local.cname), local.cname
        except (gdb.error, ValueError):
            pass
        try:  # a closure variable (__pyx_cur_scope->...) or a global C name
            return "local", _eval_in(frame, local.cname), local.cname
        except gdb.error as error:
            raise state.CyError(f"cannot read {name} ({local.cname}): {error}")
    value = global_value(function.module, name)
    if value is not None:
        cname = function.module.globals[name].cname if name in function.module.globals else None
        return "global", value, cname
    if name in function.module.globals:
        raise state.CyError(f"{name} is a global of {function.module.name} that is not set (yet)")
    raise state.CyError(
        f"No Cython name {name!r} in {function.display_name}() or in module {function.module.name}"
    )


def _eval_in(frame: "gdb.Frame", expression: str) -> "gdb.Value":
    frame.select()
    return gdb.parse_and_eval(expression)


def translate(expression: str) -> str:
    """Rewrite the Cython names of an expression into C names / convenience variables."""
    frame, function = _frame_and_function()
    output: List[str] = []
    position = 0
    for match in _IDENTIFIER.finditer(expression):
        start, end = match.span()
        word = match.group(0)
        before = expression[:start].rstrip()
        output.append(expression[position:start])
        position = end
        if before.endswith(".") or before.endswith("->") or word in _KEYWORDS or _in_string(expression, start):
            output.append(word)
            continue
        if expression[end:].lstrip().startswith("("):  # a call: leave C functions alone
            output.append(word)
            continue
        local = local_named(function, word)
        if local is not None:
            output.append(f"({local.cname})")
            continue
        value = None
        try:
            value = global_value(function.module, word)
        except gdb.error:
            value = None
        if value is not None:
            variable = f"__cy_{word}"
            gdb.set_convenience_variable(variable, value)
            output.append(f"${variable}")
            continue
        output.append(word)
    output.append(expression[position:])
    frame.select()
    return "".join(output)


def _in_string(text: str, index: int) -> bool:
    return text[:index].count('"') % 2 == 1


def evaluate(expression: str) -> "gdb.Value":
    expression = expression.strip()
    if _IDENTIFIER.fullmatch(expression):
        return lookup(expression)[1]
    translated = translate(expression)
    try:
        return gdb.parse_and_eval(translated)
    except gdb.error as error:
        raise state.CyError(f"cannot evaluate {expression!r} (as C: {translated}): {error}")


def format_value(value: "gdb.Value") -> str:
    if pyobject.is_pyobject_pointer(value):
        return pyobject.format_object(value)
    try:
        if value.type.strip_typedefs().code == gdb.TYPE_CODE_BOOL:
            return "True" if bool(value) else "False"
        return value.format_string()
    except gdb.error as error:
        return f"<unreadable: {error}>"


def frame_locals(function: Function) -> List[Local]:
    """The locals and arguments of a function, arguments first, globals excluded."""
    prefix = function.qualified_name + "."
    names = []
    for name in function.arguments:
        local = local_named(function, name)
        if local is not None:
            names.append(local)
    for local in function.locals.values():
        if local.name in function.arguments:
            continue
        if function.qualified_name and not local.qualified_name.startswith(prefix):
            continue
        names.append(local)
    return names


def module_globals(module: Module) -> List[Tuple[str, str]]:
    """(name, printed value) of the module's user-level globals."""
    rows = []
    seen = set()
    for name, local in module.globals.items():
        if name.startswith("__"):
            continue
        symbol = state.lookup_static(module, local.cname)
        if symbol is not None and symbol.addr_class != gdb.SYMBOL_LOC_BLOCK:
            try:
                rows.append((name, format_value(symbol.value())))
                seen.add(name)
            except gdb.error:
                pass
    dictionary = module_dict(module)
    if dictionary is not None:
        try:
            for name, item in pyobject.dict_str_items(dictionary):
                if name in seen or name.startswith("__"):
                    continue
                rows.append((name, pyobject.format_object(item)))
                seen.add(name)
        except gdb.error as error:
            rows.append(("(module dict)", f"<unreadable: {error}>"))
    return rows
