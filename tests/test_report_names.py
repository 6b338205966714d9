"""Cython function names in reports (runtime/src/symbolize_cython.c) for every kind of
function Cython generates C for, with and without the module's debug XML: module
functions whose C names carry a counter before the name (`__pyx_pf_5names_4null_write_block`
is def null_write_block, not null.write_block), methods of Python and cdef classes, nested
functions, lambdas, generator functions and generator expressions, named as Cython's own
tracebacks name them (`mod.outer.inner`, `mod.f.lambda`, `mod.f.genexpr`), which is also
how the debugger's cy-bt names them."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Set, Tuple

import pytest

from cytool.build import BuildOptions, build_module

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "reports"
DRIVER = FIXTURES / "driver.py"

EXPECTED = {
    ("names.touch", 8),
    ("names.null_write_block", 21),
    ("names.gen_records", 28),
    ("names.use_genexpr.genexpr", 33),
    ("names.outer.inner_2x", 38),
    ("names.make_lambda.lambda", 44),
    ("names.Rec.w_3", 50),
    ("names.Box_7.items", 56),
    ("names.Box_7.v2_get", 60),
    ("names.run", 66),
}


def frames(run_cytool, capture: Path, cache: Path) -> Set[Tuple[str, int]]:
    result = run_cytool("report", capture, "--format", "json", env={"CYTOOL_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    return {(f["function"], f["line"]) for s in document["stacks"] for f in s["frames"] if f["kind"] == "pyx"}


@pytest.mark.parametrize("opt_level", ["2", "0"])
def test_names_without_the_debug_xml(opt_level: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path,
                                     run_cytool) -> None:
    source = tmp_path_factory.mktemp("names") / "names.pyx"
    shutil.copy(FIXTURES / "names.pyx", source)
    built = build_module(source, BuildOptions(opt_level=opt_level))
    bare = tmp_path / "bare" / built.module_path.name  # no cython_debug/ beside it
    bare.parent.mkdir()
    shutil.copy(built.module_path, bare)
    capture = tmp_path / "names.cytrace"
    subprocess.run([sys.executable, str(DRIVER), str(bare), str(capture), "run", "1000"], check=True,
                   stdout=subprocess.PIPE, timeout=300)
    # an empty cache: no module index either, so the names come from the C names alone
    without_xml = frames(run_cytool, capture, tmp_path / "empty-cache")
    names = {name for name, _ in without_xml}
    assert EXPECTED <= without_xml, sorted(without_xml)
    assert not any("generator" in n or "lambda1" in n or n.startswith("__pyx") or "null.write" in n for n in names)
    # the module index names the debug XML of this build-id: the same names
    from cytool.cache import cache_root

    with_xml = frames(run_cytool, capture, cache_root())
    assert with_xml == without_xml
