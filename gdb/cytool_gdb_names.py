"""Cython names to values: the translation behind cy-print, cy-set, cy-locals, $cy_value.

Owns how a Cython name in the selected Cython frame becomes a gdb value: a local or
argument (its C name from the XML), a closure variable (read through the closure the
function was called with, so it is right from the function's first instruction), a
C-level module global (a static variable of the module), or a Python-level module
global (an entry of the module's dict); how an expression over such names is rewritten
into C for gdb to evaluate; and how values print, never failing on one bad value:
`<optimised out>`, `<unbound>` (a Python name not bound yet), `<not yet assigned>` (a C
local before its first assignment), `<unreadable: reason>`; `cdef class` instances with
their attributes.
"""
from __future__ import annotations

import re
from typing import List, Optional, Tuple

import gdb  # type: ignore

import cytool_gdb_placement as placement
import cytool_gdb_pyobject as pyobject
import cytool_gdb_state as state
from cytool_gdb_debuginfo import Function, Local, Module, c_name, first_assignment_line, is_loop_header
from cytool_gdb_frames import cython_function, location, selected_cython_frame

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYWORDS = {"sizeof", "int", "long", "char", "double", "float", "unsigned", "signed", "short", "void", "struct"}
UNBOUND = "<unbound>"
NOT_ASSIGNED = "<not yet assigned>"
OPTIMISED_OUT = "<optimised out>"
_SCOPE = "__pyx_cur_scope"


class Special(Exception):
    """A value that has a printed form but no gdb value (unbound, optimised out ...)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


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
        except (gdb.error, gdb.MemoryError):
            continue
    return None


def global_value(module: Module, name: str) -> Optional["gdb.Value"]:
    """A module global: the C static if Cython made one, else the entry in the module dict."""
    local = module.globals.get(name)
    if local is None and state.is_foreign(module):  # no XML: a cdef global is a C static of this name
        local = Local(name, "__pyx_v_" + module.mangled_prefix + name, f"{module.name}.{name}", "", 0)
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
    ensure_locals(frame, function)
    return frame, function


def ensure_locals(frame: "gdb.Frame", function: Function) -> None:
    """A function of a module without debug XML (cytool_gdb_foreign) has no list of
    locals: take the C variables Cython named `__pyx_v_NAME` in the frame's blocks (its
    arguments marked as such), and the `__pyx_v_NAME` fields of its closure scope."""
    if not state.is_foreign(function.module) or function.locals_read:
        return
    try:
        block = frame.block()
    except (gdb.error, RuntimeError):
        return
    found: List[Local] = []
    arguments: List[str] = []
    scope = None
    while block is not None:
        for symbol in block:
            name = symbol.name or ""
            if name == _SCOPE:
                scope = symbol
            if not name.startswith("__pyx_v_") or not (symbol.is_variable or symbol.is_argument):
                continue
            local = _foreign_local(function, name[len("__pyx_v_"):], name, symbol.type)
            if local.name not in function.locals:
                function.locals[local.name] = local
                found.append(local)
                if symbol.is_argument:
                    arguments.append(local.name)
        if block.function is not None:
            break  # the function's own block: above it are the file's statics
        block = block.superblock
    if scope is not None:
        try:
            fields = scope.type.strip_typedefs().target().strip_typedefs().fields()
        except (gdb.error, RuntimeError, ValueError):
            fields = []
        for field in fields:
            if field.name and field.name.startswith("__pyx_v_") and field.name[8:] not in function.locals:
                function.locals[field.name[8:]] = _foreign_local(function, field.name[8:], f"{_SCOPE}->{field.name}",
                                                                 field.type)
    function.arguments = arguments
    function.locals_read = bool(function.locals)


def _foreign_local(function: Function, name: str, cname: str, value_type: "gdb.Type") -> Local:
    try:
        python = str(value_type.strip_typedefs()) in ("PyObject *", "struct _object *")
    except (gdb.error, RuntimeError):
        python = False
    return Local(name, cname, f"{function.qualified_name}.{name}", "PythonObject" if python else "CObject", 0)


def local_named(function: Function, name: str) -> Optional[Local]:
    local = function.locals.get(name)
    if local is not None:
        return local
    if name in function.arguments:  # an argument the XML lists without a LocalVar
        return Local(name, f"__pyx_v_{name}", name, "PythonObject", function.lineno)
    return None


# -- reading a local -----------------------------------------------------------------------


def _symbol_type(frame: "gdb.Frame", name: str) -> Optional["gdb.Type"]:
    try:
        symbol = gdb.lookup_symbol(name, frame.block())[0]
    except (gdb.error, RuntimeError):
        return None
    return symbol.type if symbol is not None else None


def _scope_expression(frame: "gdb.Frame", function: Function) -> Optional[str]:
    """A C expression for the closure scope that holds the function's closure variables
    from its first instruction on: the generator's closure, or the closure the function
    object carries (for an inner function that has no scope of its own)."""
    scope_type = _symbol_type(frame, _SCOPE)
    if scope_type is None:
        return None
    if function.is_generator_body and _symbol_type(frame, "__pyx_generator") is not None:
        return f"(({scope_type})__pyx_generator->closure)"
    outer = _symbol_type(frame, "__pyx_outer_scope")
    if outer is not None and str(outer) == str(scope_type) and _symbol_type(frame, "__pyx_self") is not None:
        try:
            gdb.lookup_type("__pyx_CyFunctionObject")
        except gdb.error:
            return None
        return f"(({scope_type})((__pyx_CyFunctionObject *)__pyx_self)->func_closure)"
    return None


def _in_set_up(frame: "gdb.Frame", function: Function) -> bool:
    """True while the frame runs the function's set-up (before its first statement)."""
    try:
        pc = frame.pc()
    except gdb.error:
        return False
    entry = placement.body_entry(function)
    if entry is None:
        return False
    rows = placement.function_rows(function)
    return bool(rows) and rows[0][0] <= pc < entry and c_name(frame.name()) == function.cname


def read_local(frame: "gdb.Frame", function: Function, local: Local) -> "gdb.Value":
    """The gdb value of a local, argument or closure variable; Special for a value that
    has none (unbound, not yet assigned, optimised out), CyError if it cannot be read."""
    is_argument = local.name in function.arguments or local.name == "self"
    if not is_argument and _in_set_up(frame, function) and not local.cname.startswith(_SCOPE):
        raise Special(UNBOUND if local.is_python_object else NOT_ASSIGNED)
    cname = local.cname
    if cname.startswith(_SCOPE):
        scope = _scope_expression(frame, function)
        if scope is not None:
            cname = scope + cname[len(_SCOPE):]
        elif _in_set_up(frame, function):
            raise Special(UNBOUND)
    try:
        if "->" not in cname:  # a plain C variable of the frame
            value = frame.read_var(cname)
        else:  # a closure variable or a global C name
            frame.select()
            value = gdb.parse_and_eval(cname)
        if value.is_optimized_out:
            raise Special(OPTIMISED_OUT)
        value.fetch_lazy()
    except (gdb.error, ValueError) as error:
        if "optimized out" in str(error):
            raise Special(OPTIMISED_OUT)
        raise state.CyError(f"cannot read {local.name} ({local.cname}): {error}")
    except gdb.MemoryError as error:
        raise Special(f"<unreadable: {str(error).rstrip('.')}>")
    if not local.is_python_object and not is_argument and _before_first_assignment(frame, function, local):
        raise Special(NOT_ASSIGNED)
    return value


def _before_first_assignment(frame: "gdb.Frame", function: Function, local: Local) -> bool:
    """True while the frame has not run the local's first assignment: before its line,
    or on it (a stop is at the start of its line) unless that line is a loop head."""
    path, line = location(frame)
    if path is None or function.source is None or path != function.source:
        return False
    first = first_assignment_line(function, local)
    if line == first:  # a loop head assigns its target after its first arrival only
        return not (is_loop_header(function.source, first) and placement.is_branch_tail(function, frame.pc(), line))
    return line < first


def lookup(name: str) -> Tuple[str, Optional["gdb.Value"], Optional[str]]:
    """(kind, value, cname) of a Cython name in the selected Cython frame."""
    frame, function = _frame_and_function()
    local = local_named(function, name)
    if local is not None:
        return "local", read_local(frame, function, local), local.cname
    value = global_value(function.module, name)
    if value is not None:
        cname = function.module.globals[name].cname if name in function.module.globals else None
        return "global", value, cname
    if name in function.module.globals:
        raise state.CyError(f"{name} is a global of {function.module.name} that is not set (yet)")
    raise state.CyError(
        f"No Cython name {name!r} in {function.display_name}() or in module {function.module.name}"
    )


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
            cname = local.cname
            if cname.startswith(_SCOPE):
                scope = _scope_expression(frame, function)
                if scope is not None:
                    cname = scope + cname[len(_SCOPE):]
            output.append(f"({cname})")
            continue
        value = None
        try:
            value = global_value(function.module, word)
        except (gdb.error, gdb.MemoryError):
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
        value = gdb.parse_and_eval(translated)
        if value.is_optimized_out:
            raise Special(OPTIMISED_OUT)
        value.fetch_lazy()
        return value
    except gdb.MemoryError as error:
        raise Special(f"<unreadable: {str(error).rstrip('.')}>")
    except gdb.error as error:
        if "optimized out" in str(error):
            raise Special(OPTIMISED_OUT)
        raise state.CyError(f"cannot evaluate {expression!r} (as C: {translated}): {error}")


def format_value(value: "gdb.Value") -> str:
    """A value as Cython shows it; never raises."""
    try:
        if value.is_optimized_out:
            return OPTIMISED_OUT
        if pyobject.is_pyobject_pointer(value):
            text = pyobject.format_object(value)
            return UNBOUND if text == "NULL" else text
        code = value.type.strip_typedefs().code
        if code == gdb.TYPE_CODE_BOOL:
            return "True" if bool(value) else "False"
        if code == gdb.TYPE_CODE_FLT:
            return repr(float(value))  # as Python prints a float: 3.0, not gdb's 3
        return value.format_string()
    except (gdb.error, gdb.MemoryError, RuntimeError, ValueError) as error:
        if "optimized out" in str(error):
            return OPTIMISED_OUT
        return f"<unreadable: {str(error).rstrip('.')}>"


def show(name: str, reader) -> str:
    """`name = text` for one value, whatever goes wrong reading it."""
    try:
        return f"{name} = {format_value(reader())}"
    except Special as special:
        return f"{name} = {special.text}"
    except gdb.GdbError as error:
        return f"{name} = <unreadable: {str(error).rstrip('.')}>"
    except (gdb.error, gdb.MemoryError, RuntimeError, ValueError) as error:
        return f"{name} = <unreadable: {str(error).rstrip('.')}>"


# -- cdef class instances -----------------------------------------------------------------


def cdef_attributes(value: "gdb.Value") -> Optional[List[Tuple[str, str]]]:
    """(attribute, printed value) of a cdef class instance, or None for other objects."""
    try:
        if not pyobject.is_pyobject_pointer(value) or pyobject.address_of(value) == 0:
            return None
        type_name = pyobject.type_name(value)
    except pyobject.READ_ERRORS:
        return None
    struct = None
    for module in state.modules():
        struct = module.classes().get(type_name)
        if struct is not None:
            break
    if struct is None:
        return None
    try:
        struct_type = gdb.lookup_type("struct " + struct)
    except gdb.error:
        return None
    instance = value.cast(struct_type.pointer()).dereference()
    rows: List[Tuple[str, str]] = []
    _struct_fields(instance, rows)
    return rows


def _struct_fields(instance: "gdb.Value", rows: List[Tuple[str, str]]) -> None:
    for field in instance.type.strip_typedefs().fields():
        name = field.name or ""
        if name == "__pyx_base":  # a cdef base class: its attributes first
            _struct_fields(instance[field], rows)
            continue
        if not name or name == "ob_base" or name.startswith("__pyx_") or name in ("__weakref__", "__dict__"):
            continue
        try:
            rows.append((name, format_value(instance[field])))
        except (gdb.error, gdb.MemoryError) as error:
            rows.append((name, f"<unreadable: {str(error).rstrip('.')}>"))


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


def module_globals(module: Module, show_all: bool = False) -> Tuple[List[Tuple[str, str]], int]:
    """((name, printed value) of the module's globals, number of dunder names hidden).
    Names starting with `__` are hidden unless show_all."""
    rows: List[Tuple[str, str]] = []
    seen = set()
    hidden = set()
    for name, local in module.globals.items():
        if name.startswith("__") and not show_all:
            continue
        symbol = state.lookup_static(module, local.cname)
        if symbol is not None and symbol.addr_class != gdb.SYMBOL_LOC_BLOCK:
            rows.append((name, show(name, symbol.value).split(" = ", 1)[1]))
            seen.add(name)
    dictionary = module_dict(module)
    if dictionary is not None:
        try:
            for name, item in pyobject.dict_str_items(dictionary):
                if name in seen:
                    continue
                if name.startswith("__") and not show_all:
                    hidden.add(name)
                    continue
                rows.append((name, pyobject.format_object(item)))
                seen.add(name)
        except pyobject.READ_ERRORS as error:
            rows.append(("(module dict)", f"<unreadable: {error}>"))
    return rows, len(hidden)
