"""`NamedTuple` classes without importing `typing`, which costs about 4 ms on every warm
`cytool run` (the modules of that path use this one; the others may use typing's).

    from cytool.records import NamedTuple

    class Point(NamedTuple):
        \"\"\"A point.\"\"\"
        x: int
        y: int = 0

        def norm(self) -> float: ...

Type checkers see typing.NamedTuple. At run time the class is built as typing builds it:
collections.namedtuple over the annotated fields, in order, with their defaults, then the
class body's docstring, methods, properties and class methods set on it.
"""
from __future__ import annotations

import collections

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
else:
    _NOT_COPIED = frozenset({"__module__", "__qualname__", "__annotations__", "__dict__", "__weakref__"})

    class _RecordMeta(type):
        def __new__(mcls, name, bases, namespace):  # type: ignore[no-untyped-def]
            if namespace.get("_is_record_base"):
                return super().__new__(mcls, name, bases, namespace)
            annotations = dict(namespace.get("__annotations__", {}))
            fields = list(annotations)
            defaults = []
            for field in fields:
                if field in namespace:
                    defaults.append(namespace[field])
                elif defaults:
                    raise TypeError(f"{name}: field {field!r} without a default follows one with a default")
            record = collections.namedtuple(name, fields, defaults=defaults, module=namespace.get("__module__"))
            record.__annotations__ = annotations
            record.__qualname__ = namespace.get("__qualname__", name)
            for key, value in namespace.items():
                if key not in _NOT_COPIED and key not in annotations:
                    setattr(record, key, value)
            return record

    class NamedTuple(metaclass=_RecordMeta):
        """Base of a record class (see the module doc)."""

        _is_record_base = True
