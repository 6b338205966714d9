"""cytool.records.NamedTuple (typing.NamedTuple's class syntax without importing typing,
for the warm start) behaves as typing's does for what cytool's records use."""
from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from cytool.build.options import BuildOptions, BuildResult
from cytool.records import NamedTuple


class Sample(NamedTuple):
    """A sample record."""

    name: str
    size: int = 0
    tags: tuple = ()

    @property
    def label(self) -> str:
        return f"{self.name}:{self.size}"

    @classmethod
    def parse(cls, text: str) -> "Sample":
        name, size = text.split(":")
        return cls(name, int(size))


def test_fields_defaults_methods_and_doc() -> None:
    sample = Sample("a")
    assert sample == ("a", 0, ()) and Sample._fields == ("name", "size", "tags")
    assert sample._replace(size=3).label == "a:3"
    assert Sample.parse("b:7") == Sample("b", 7)
    assert Sample.__doc__ == "A sample record." and Sample.__module__ == __name__
    assert Sample.__annotations__ == {"name": "str", "size": "int", "tags": "tuple"}
    with pytest.raises(TypeError):
        Sample()  # name has no default


def test_pickles_and_a_field_without_default_after_one_with_is_refused() -> None:
    assert pickle.loads(pickle.dumps(Sample("x", 2))) == Sample("x", 2)
    options = BuildOptions(opt_level="0")
    assert pickle.loads(pickle.dumps(options)) == options
    with pytest.raises(TypeError, match="without a default"):
        class Bad(NamedTuple):
            a: int = 1
            b: int


def test_warm_path_modules_do_not_import_typing() -> None:
    code = ("import sys; before = set(sys.modules); "
            "import cytool.cli, cytool.commands.run, cytool.launch, cytool.importer, cytool.project.setup_py; "
            "new = set(sys.modules) - before; print('typing' in new, 'argparse' in new, 'hashlib' in new)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "False"]
    assert BuildResult._fields[0] == "module_name"
