"""Reading Python objects out of the stopped process, without running any code in it.

Owns the repr of a `PyObject *`: int, bool, float, str, bytes, list, tuple, dict and
None are decoded from their memory layout (found through the DWARF types of the
interpreter or of the module, so the per-version differences - PyLongObject's
`long_value` since 3.12, the dict keys layout since 3.11 - come from the types
themselves); a class prints as `<class 'pkg.mod.Name'>`; modules, functions, generators,
coroutines and async generators (Python's and Cython's) by name, as Python shows them
(`<generator object gen at 0x...>`); any other object as Python's default repr,
`<pkg.mod.Vec object at 0x...>`. Also looks up names in a module's dict
(Python-level globals of a Cython module). Nothing here raises on a bad pointer: an
unreadable object prints as `<unreadable: reason>`.
"""
from __future__ import annotations

import math
import os
import re
from typing import Dict, Iterator, Optional, Tuple

import gdb  # type: ignore

MAX_ITEMS = 100
MAX_DEPTH = 4
MAX_STRING = 2000

_types: Dict[str, Optional["gdb.Type"]] = {}


def _type(name: str) -> Optional["gdb.Type"]:
    if name not in _types:
        try:
            _types[name] = gdb.lookup_type(name)
        except gdb.error:
            _types[name] = None
    return _types[name]


def forget_types() -> None:
    """New objfiles bring new types (libpython loads after the executable)."""
    _types.clear()


def _fields(gdb_type: "gdb.Type") -> set:
    try:
        return {field.name for field in gdb_type.strip_typedefs().fields()}
    except (TypeError, gdb.error):
        return set()


def is_pyobject_pointer(value: "gdb.Value") -> bool:
    """True for PyObject *, PyListObject *, struct __pyx_obj_mod_Acc *, ..."""
    try:
        gdb_type = value.type.strip_typedefs()
    except gdb.error:
        return False
    if gdb_type.code != gdb.TYPE_CODE_PTR:
        return False
    target = gdb_type.target().strip_typedefs()
    if target.code != gdb.TYPE_CODE_STRUCT:
        return False
    names = _fields(target)
    if "ob_type" in names:  # PyObject (3.12+ wraps ob_refcnt in an anonymous union)
        return True
    if "ob_base" in names:
        return True
    fields = target.fields()
    return bool(fields) and fields[0].name in ("ob_base", "__pyx_base")


def _address(value: "gdb.Value") -> int:
    return int(value.cast(gdb.lookup_type("unsigned long")))


def _as(value: "gdb.Value", type_name: str) -> Optional["gdb.Value"]:
    gdb_type = _type(type_name)
    if gdb_type is None:
        return None
    return value.cast(gdb_type.pointer()).dereference()


def type_name(value: "gdb.Value") -> str:
    obj = _as(value, "PyObject")
    if obj is None:
        raise gdb.error("the PyObject type is not known to gdb")
    return obj["ob_type"]["tp_name"].string()


def read_str(value: "gdb.Value") -> str:
    return _str(value)


def read_int(value: "gdb.Value") -> int:
    return _int(value)


def address_of(value: "gdb.Value") -> int:
    return _address(value)


def _read(address: int, size: int) -> bytes:
    return bytes(gdb.selected_inferior().read_memory(address, size))


def _object_size(value: "gdb.Value") -> int:
    var = _as(value, "PyVarObject")
    if var is None:
        raise gdb.error("PyVarObject not known")
    return int(var["ob_size"])


def _int(value: "gdb.Value") -> int:
    long_object = _as(value, "PyLongObject")
    if long_object is None:
        raise gdb.error("PyLongObject not known")
    names = _fields(long_object.type)
    if "long_value" in names:  # 3.12+: tagged size
        body = long_object["long_value"]
        tag = int(body["lv_tag"])
        count = tag >> 3
        sign = 1 - (tag & 3)
        digits = body["ob_digit"]
    else:
        size = int(long_object["ob_base"]["ob_size"])
        count = abs(size)
        sign = -1 if size < 0 else 1
        digits = long_object["ob_digit"]
    bits = 30 if digits.type.strip_typedefs().target().sizeof == 4 else 15
    total = 0
    for index in range(min(count, 1000)):
        total |= int(digits[index]) << (bits * index)
    return sign * total


def _float(value: "gdb.Value") -> float:
    float_object = _as(value, "PyFloatObject")
    if float_object is None:
        raise gdb.error("PyFloatObject not known")
    return float(float_object["ob_fval"])


def _str(value: "gdb.Value") -> str:
    ascii_type = _type("PyASCIIObject")
    compact_type = _type("PyCompactUnicodeObject")
    if ascii_type is None:
        raise gdb.error("PyASCIIObject not known")
    head = value.cast(ascii_type.pointer()).dereference()
    length = int(head["length"])
    status = head["state"]
    kind = int(status["kind"])
    compact = int(status["compact"])
    is_ascii = int(status["ascii"])
    address = _address(value)
    if compact and is_ascii:
        data = address + ascii_type.sizeof
    elif compact and compact_type is not None:
        data = address + compact_type.sizeof
    else:
        unicode_object = _as(value, "PyUnicodeObject")
        if unicode_object is None:
            raise gdb.error("PyUnicodeObject not known")
        data = int(unicode_object["data"]["any"])
    shown = min(length, MAX_STRING)
    raw = _read(data, shown * kind)
    codec = {1: "latin-1", 2: "utf-16-le", 4: "utf-32-le"}[kind]
    return raw.decode(codec, errors="replace")


def _bytes(value: "gdb.Value") -> bytes:
    bytes_object = _as(value, "PyBytesObject")
    if bytes_object is None:
        raise gdb.error("PyBytesObject not known")
    size = int(bytes_object["ob_base"]["ob_size"])
    start = int(bytes_object["ob_sval"].address.cast(gdb.lookup_type("unsigned long")))
    return _read(start, min(size, MAX_STRING))


def _sequence_items(value: "gdb.Value", kind: str) -> Tuple[list, int]:
    type_name_ = "PyListObject" if kind == "list" else "PyTupleObject"
    sequence = _as(value, type_name_)
    if sequence is None:
        raise gdb.error(f"{type_name_} not known")
    size = int(sequence["ob_base"]["ob_size"])
    items = sequence["ob_item"]
    return [items[i] for i in range(min(size, MAX_ITEMS))], size


def python_version() -> Optional[Tuple[int, int]]:
    """The debugged interpreter's version: Py_Version (3.11+) or the python/libpython file name."""
    try:
        packed = int(gdb.parse_and_eval("*(unsigned int *)&Py_Version"))
        if packed >> 24 == 3:
            return 3, (packed >> 16) & 0xFF
    except gdb.error:
        pass
    for objfile in gdb.objfiles():
        match = re.match(r"^(?:lib)?python(\d)\.(\d+)", os.path.basename(os.path.realpath(objfile.filename or "")))
        if match:
            return int(match.group(1)), int(match.group(2))
    return None


def _raw_dict_items(value: "gdb.Value") -> Iterator[Tuple["gdb.Value", "gdb.Value"]]:
    """The dict layouts of CPython 3.9-3.13 on 64-bit Linux, for interpreters whose
    PyDictKeysObject is opaque to gdb (no debug information for the interpreter)."""
    version = python_version()
    if version is None or gdb.lookup_type("void").pointer().sizeof != 8:
        raise gdb.error("the dict layout is not known to gdb")
    unsigned = gdb.lookup_type("unsigned long")
    object_pointer = _type("PyObject").pointer()

    def word(address: int) -> int:
        return int.from_bytes(_read(address, 8), "little", signed=True)

    address = _address(value)
    keys = word(address + 32)
    values = word(address + 40)
    if version < (3, 11):
        size = word(keys + 8)
        nentries = word(keys + 32)
        width = 1 if size <= 0xFF else 2 if size <= 0xFFFF else 4 if size <= 0xFFFFFFFF else 8
        entries = keys + 40 + size * width
        entry_size, key_offset, value_offset = 24, 8, 16
        value_base = values
    else:
        header = _read(keys + 8, 3)
        log2_index_bytes, kind = header[1], header[2]
        nentries = word(keys + 24)
        entries = keys + 32 + (1 << log2_index_bytes)
        if kind == 0:
            entry_size, key_offset, value_offset = 24, 8, 16
        else:
            entry_size, key_offset, value_offset = 16, 0, 8
        value_base = values + (8 if version >= (3, 13) else 0) if values else 0
    for index in range(min(nentries, MAX_ITEMS * 10)):
        entry = entries + index * entry_size
        key = word(entry + key_offset)
        item = word(value_base + 8 * index) if values else word(entry + value_offset)
        if key and item:
            yield (gdb.Value(key).cast(unsigned).cast(object_pointer),
                   gdb.Value(item).cast(unsigned).cast(object_pointer))


def dict_items(value: "gdb.Value") -> Iterator[Tuple["gdb.Value", "gdb.Value"]]:
    """(key, value) PyObject pointers of a dict, for the 3.9-3.13 layouts."""
    dict_object = _as(value, "PyDictObject")
    keys_type = _type("PyDictKeysObject")
    if dict_object is None or keys_type is None or not _fields(keys_type):
        yield from _raw_dict_items(value)
        return
    keys = dict_object["ma_keys"].cast(keys_type.pointer()).dereference()
    names = _fields(keys_type)
    nentries = int(keys["dk_nentries"])
    indices = int(keys["dk_indices"].address.cast(gdb.lookup_type("unsigned long")))
    if "dk_log2_index_bytes" in names:  # 3.11+
        entries = indices + (1 << int(keys["dk_log2_index_bytes"]))
        general = int(keys["dk_kind"]) == 0
    else:  # 3.9, 3.10
        size = int(keys["dk_size"])
        width = 1 if size <= 0xFF else 2 if size <= 0xFFFF else 4 if size <= 0xFFFFFFFF else 8
        entries = indices + size * width
        general = True
    entry_type = _type("PyDictKeyEntry" if general else "PyDictUnicodeEntry")
    if entry_type is None:
        raise gdb.error("dict entry type not known")
    values = dict_object["ma_values"]
    split = int(values.cast(gdb.lookup_type("unsigned long"))) != 0
    value_array = None
    if split:
        values_type = values.type.strip_typedefs().target().strip_typedefs()
        if values_type.code == gdb.TYPE_CODE_STRUCT:
            value_array = values.dereference()["values"]
        else:
            value_array = values
    pointer = entry_type.pointer()
    for index in range(min(nentries, MAX_ITEMS * 10)):
        entry = gdb.Value(entries + index * entry_type.sizeof).cast(pointer).dereference()
        key = entry["me_key"]
        item = value_array[index] if split else entry["me_value"]
        if int(key.cast(gdb.lookup_type("unsigned long"))) == 0:
            continue
        if int(item.cast(gdb.lookup_type("unsigned long"))) == 0:
            continue
        yield key, item


_Py_TPFLAGS_HEAPTYPE = 1 << 9
_Py_TPFLAGS_TYPE_SUBCLASS = 1 << 31
READ_ERRORS = (gdb.error, gdb.MemoryError, KeyError, ValueError, OverflowError, UnicodeDecodeError, RuntimeError,
               TypeError, IndexError)


def format_object(value: "gdb.Value", depth: int = 0) -> str:
    """The repr of a PyObject pointer ("NULL" for a null pointer), never raising."""
    try:
        address = _address(value)
    except READ_ERRORS as error:
        return f"<unreadable: {_reason(error)}>"
    if address == 0:
        return "NULL"
    try:
        name = type_name(value)
    except READ_ERRORS as error:
        return f"<unreadable: object at {address:#x}: {_reason(error)}>"
    try:
        if is_type_object(value):
            return f"<class '{class_name(value)}'>"
        return _format_known(value, name, depth, address)
    except READ_ERRORS:
        return f"<{name} object at {address:#x}>"


def _reason(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.rstrip(".")


def is_type_object(value: "gdb.Value") -> bool:
    obj = _as(value, "PyObject")
    if obj is None:
        return False
    return bool(int(obj["ob_type"]["tp_flags"]) & _Py_TPFLAGS_TYPE_SUBCLASS)


def class_name(value: "gdb.Value") -> str:
    """`pkg.mod.Name` of a class object: its module and qualified name."""
    type_object = _as(value, "PyTypeObject")
    if type_object is None:
        raise gdb.error("PyTypeObject not known")
    name = type_object["tp_name"].string()
    if not int(type_object["tp_flags"]) & _Py_TPFLAGS_HEAPTYPE:
        return name  # a static type: tp_name is `module.Name` (or just `int` for builtins)
    heap = _as(value, "PyHeapTypeObject")
    qualified = name
    if heap is not None:
        try:
            qualified = _str(heap["ht_qualname"])
        except READ_ERRORS:
            qualified = name
    if "." in name and name.endswith("." + qualified):
        return name  # Cython's types carry `pkg.mod.Name` in tp_name already
    module = None
    try:
        dictionary = type_object["tp_dict"]
        if _address(dictionary):
            found = dict_lookup(dictionary, "__module__")
            if found is not None and type_name(found) == "str":
                module = _str(found)
    except READ_ERRORS:
        module = None
    return f"{module}.{qualified}" if module and module != "builtins" else qualified


def _format_known(value: "gdb.Value", name: str, depth: int, address: int) -> str:
    if name == "NoneType":
        return "None"
    if name == "bool":
        return "True" if _int(value) else "False"
    if name == "int":
        return str(_int(value))
    if name == "float":
        number = _float(value)
        return repr(number) if math.isfinite(number) else f"float('{number}')"
    if name == "str":
        return repr(_str(value))
    if name == "bytes":
        return repr(_bytes(value))
    if depth >= MAX_DEPTH and name in ("list", "tuple", "dict"):
        return f"<{name} object at {address:#x}>"
    if name in ("list", "tuple"):
        items, size = _sequence_items(value, name)
        if size < 0:
            raise gdb.error("negative size")
        parts = [format_object(item, depth + 1) for item in items]
        if size > len(items):
            parts.append("...")
        if name == "tuple":
            return "(" + ", ".join(parts) + ("," if size == 1 else "") + ")"
        return "[" + ", ".join(parts) + "]"
    if name == "dict":
        parts = []
        for count, (key, item) in enumerate(dict_items(value)):
            if count >= MAX_ITEMS:
                parts.append("...")
                break
            parts.append(f"{format_object(key, depth + 1)}: {format_object(item, depth + 1)}")
        return "{" + ", ".join(parts) + "}"
    named = _named_object(value, name)
    if named is not None:
        return named
    return f"<{name} object at {address:#x}>"


def _named_object(value: "gdb.Value", name: str) -> Optional[str]:
    """Modules, functions and generators by their names, as Python shows them."""
    address = _address(value)
    if name == "module":
        module = _as(value, "PyModuleObject")
        if module is not None and "md_name" in _fields(module.type):
            return f"<module {_str(module['md_name'])!r}>"
    if name == "function":
        function = _as(value, "PyFunctionObject")
        if function is not None:
            return f"<function {_str(function['func_qualname'])} at {address:#x}>"
    if name.endswith("cython_function_or_method"):
        function = _as(value, "__pyx_CyFunctionObject")
        if function is not None and "func_qualname" in _fields(function.type):
            return f"<cyfunction {_str(function['func_qualname'])} at {address:#x}>"
    if name == "builtin_function_or_method":
        function = _as(value, "PyCFunctionObject")
        if function is not None:
            return f"<built-in function {function['m_ml']['ml_name'].string()}>"
    generator = _generator_kind(name)
    if generator is not None:
        qualified = _generator_name(value, name)
        if qualified is not None:
            return f"<{generator} object {qualified} at {address:#x}>"
    return None


# Python's generator types and their C structs with the field prefix of their name fields
# (`_PyGenObject_HEAD(gi)`: gi_name, gi_qualname; cr_ for coroutines, ag_ for async
# generators, in every version 3.9-3.13). Cython's own (`_cython_3_x.generator`, ...) are
# all a `__pyx_CoroutineObject` (an async generator's starts with one) with gi_ fields.
_PYTHON_GENERATORS = {
    "generator": ("PyGenObject", "gi", "PyGen_Type"),
    "coroutine": ("PyCoroObject", "cr", "PyCoro_Type"),
    "async_generator": ("PyAsyncGenObject", "ag", "PyAsyncGen_Type"),
}


def _generator_kind(type_name_: str) -> Optional[str]:
    """`generator`, `coroutine` or `async_generator` for Python's types of those names and
    for Cython's (their tp_name carries a module prefix since Cython 3:
    `_cython_3_1_2.coroutine`); None for any other type name."""
    if type_name_ in _PYTHON_GENERATORS:
        return type_name_
    prefix, _, last = type_name_.rpartition(".")
    if prefix.startswith("_cython_") and last in _PYTHON_GENERATORS:
        return last
    return None


def _is_python_type(value: "gdb.Value", symbol: str) -> bool:
    """Whether the object's type is the interpreter's `symbol` (PyGen_Type, ...), not a
    Cython type of the same tp_name (Cython 0.29 names its generator type `generator`);
    True when gdb cannot tell (no symbol)."""
    try:
        expected = _address(gdb.parse_and_eval(f"&{symbol}"))
    except READ_ERRORS:
        return True
    obj = _as(value, "PyObject")
    return obj is not None and _address(obj["ob_type"]) == expected


def _generator_name(value: "gdb.Value", type_name_: str) -> Optional[str]:
    """The `__qualname__` of a generator, coroutine or async generator object (its name
    when the qualified name is unset), read through the struct's DWARF type: Python's
    PyGenObject / PyCoroObject / PyAsyncGenObject, or Cython's __pyx_CoroutineObject.
    None when the type is not known to gdb or has no such fields (the caller prints the
    nameless form); raises gdb.error / gdb.MemoryError on unreadable memory."""
    if type_name_ in _PYTHON_GENERATORS and _is_python_type(value, _PYTHON_GENERATORS[type_name_][2]):
        struct, prefix, _ = _PYTHON_GENERATORS[type_name_]
    else:
        struct, prefix = "__pyx_CoroutineObject", "gi"
    generator = _as(value, struct)
    if generator is None:
        return None
    fields = _fields(generator.type)
    for field in (f"{prefix}_qualname", f"{prefix}_name"):
        if field in fields and _address(generator[field]) and type_name(generator[field]) == "str":
            return _str(generator[field])
    return None


def dict_lookup(dict_pointer: "gdb.Value", key: str) -> Optional["gdb.Value"]:
    """The value stored under a str key in a dict, as a PyObject pointer."""
    for key_object, item in dict_items(dict_pointer):
        try:
            if type_name(key_object) == "str" and _str(key_object) == key:
                return item
        except READ_ERRORS:
            continue
    return None


def dict_str_items(dict_pointer: "gdb.Value") -> Iterator[Tuple[str, "gdb.Value"]]:
    for key_object, item in dict_items(dict_pointer):
        try:
            if type_name(key_object) == "str":
                yield _str(key_object), item
        except READ_ERRORS:
            continue
