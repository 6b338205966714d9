"""`%load_ext cytool` in a real IPython InteractiveShell and in a real Jupyter kernel
(nbclient running examples/notebook.ipynb): %%cytool cells (names pushed, top-level code
run on every run, edits always new code, notebooks kept apart, the %%cython options),
errors with the cell's lines and no internal traceback, --profile, %cytool_profile and
-a shown inline."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "examples" / "notebook.ipynb"


@pytest.fixture(scope="module")
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "cytool")
    return ip


def run(shell, source: str):
    """(result, captured) of a cell run in the shell."""
    from IPython.utils.capture import capture_output

    with capture_output() as captured:
        result = shell.run_cell(source)
    return result, captured


def test_cell_names_top_level_code_and_reruns(shell) -> None:
    cell = "%%cytool\ndef triple(int x):\n    return 3 * x\n\nRUNS = globals().get('RUNS', 0)\nprint('top level ran')\n_hidden = 1\n"
    for _ in range(2):  # the same cell again: its top-level code runs again, as Python's would
        result, captured = run(shell, cell)
        assert result.success, result.error_in_exec
        assert captured.stdout == "top level ran\n"
    assert shell.user_ns["triple"](5) == 15
    assert "_hidden" not in shell.user_ns  # public names only, like %%cython


def test_an_edited_cell_is_new_code_whatever_its_name(shell) -> None:
    assert run(shell, "%%cytool --module-name shared_name\ndef answer():\n    return 1\n")[0].success
    first = shell.user_ns["answer"]
    assert run(shell, "%%cytool --module-name shared_name\ndef answer():\n    return 2\n")[0].success
    assert shell.user_ns["answer"]() == 2 and first() == 1
    assert sys.modules["shared_name"].answer() == 2


def test_two_notebooks_never_share_a_cell_file(shell) -> None:
    from cytool.notebook.cells import cell_source

    cell = "def which():\n    return 'same text'\n"
    a = cell_source("-n same", cell, "notebook:/work/a.ipynb", "same")
    b = cell_source("-n same", cell, "notebook:/work/b.ipynb", "same")
    assert a != b and a.name == b.name == "same.pyx"
    assert a.read_text().splitlines()[0] == "# %%cytool -n same"  # .pyx line N is cell line N
    for notebook, expected in (("a.ipynb", 1), ("b.ipynb", 2)):
        shell.user_ns["__session__"] = notebook
        try:
            assert run(shell, f"%%cytool -n nb_module\ndef which():\n    return {expected}\n")[0].success
        finally:
            del shell.user_ns["__session__"]
        assert shell.user_ns["which"]() == expected


def test_cython_error_names_the_cell_line(shell) -> None:
    result, captured = run(shell, "%%cytool\nx = 1\ndef broken(y)\n    return y\n")
    error = result.error_in_exec
    assert type(error).__name__ == "UsageError", error
    text = str(error)
    assert "Cython could not compile the cell: line 3, column 13: Expected ':'" in text, text
    assert "def broken(y)" in text and "_cytool_cell_" not in text
    assert "Traceback" not in captured.stdout + captured.stderr and "cytool/" not in captured.stdout


def test_c_compiler_error_is_shown(shell) -> None:
    result, captured = run(shell, '%%cytool\ncdef extern from "no_such_header_anywhere.h":\n    int thing\n')
    text = str(result.error_in_exec)
    assert type(result.error_in_exec).__name__ == "UsageError", result.error_in_exec
    assert "the C compiler" in text and "no_such_header_anywhere.h" in text, text
    assert "Traceback" not in captured.stdout + captured.stderr


def test_runtime_error_keeps_the_cells_traceback(shell) -> None:
    result, captured = run(shell, "%%cytool\ndef ok():\n    pass\n\nraise ValueError('from the cell')\n")
    assert isinstance(result.error_in_exec, ValueError)
    out = re.sub(r"\x1b\[[0-9;]*m", "", captured.stdout + captured.stderr)
    assert "ValueError: from the cell" in out
    assert re.search(r"_cytool_cell_\w+\.pyx:5|line 5", out), out  # the cell's line 5
    assert "cytool/notebook" not in out and "importlib" not in out, out


def test_options_as_cython_magic_has_them(shell, tmp_path: Path) -> None:
    (tmp_path / "helper.h").write_text("static int helper_value(void) { return 41; }\n")
    cell = (f"%%cytool -O0 --cplus -l m -I {tmp_path} -X boundscheck=False --compile-args=-DEXTRA=1 -v\n"
            "from libcpp.vector cimport vector\n"
            'cdef extern from "helper.h":\n    int helper_value()\n'
            'cdef extern from "math.h":\n    double cos(double)\n'
            "cdef extern from *:\n    int EXTRA\n"
            "def combined():\n    cdef vector[int] v = [helper_value(), EXTRA]\n    return v[0] + v[1] + int(cos(0.0)) - 1\n")
    result, captured = run(shell, cell)
    assert result.success, result.error_in_exec
    assert shell.user_ns["combined"]() == 42
    assert "-O0" in captured.stderr and "-lm" in captured.stderr  # -v shows the commands
    result, _ = run(shell, "%%cytool -X nonsense_directive=1\ndef f():\n    pass\n")
    assert type(result.error_in_exec).__name__ == "UsageError" and "nonsense_directive" in str(result.error_in_exec)
    result, _ = run(shell, "%%cytool -O 9\ndef f():\n    pass\n")
    assert type(result.error_in_exec).__name__ == "UsageError" and "-O9" in str(result.error_in_exec)
    result, _ = run(shell, "%%cytool --module-name a.b\ndef f():\n    pass\n")
    assert type(result.error_in_exec).__name__ == "UsageError"


def test_annotate_profile_and_cytool_profile_inline(shell) -> None:
    result, captured = run(shell, "%%cytool -a\ndef plain(x):\n    return x + 1\n")
    assert result.success, result.error_in_exec
    html = captured.outputs[0].data["text/html"]
    assert "body.cython" in html and "plain" in html and "<html" not in html
    result, captured = run(shell, "%%cytool --profile\ndef blocks(int n):\n    return [bytearray(5000) for _ in range(n)]\n\nheld = blocks(100)\n")
    assert result.success, result.error_in_exec
    bundle = captured.outputs[0].data
    assert re.search(r"_cytool_cell_\w+\.pyx:3", bundle["text/plain"]), bundle["text/plain"]
    assert "return [bytearray(5000) for _ in range(n)]" in bundle["text/plain"]
    assert bundle["text/html"].startswith('<iframe class="cytool-report"') and "flame" in bundle["text/html"]
    result, captured = run(shell, "%cytool_profile len(blocks(50))")
    assert result.success and result.result == 50, result.error_in_exec
    assert re.search(r"_cytool_cell_\w+\.pyx:3", captured.outputs[0].data["text/plain"])
    result, _ = run(shell, "%cytool_profile")
    assert type(result.error_in_exec).__name__ == "UsageError"
    result, _ = run(shell, "%cytool_profile def (")
    assert type(result.error_in_exec).__name__ == "UsageError" and "not Python" in str(result.error_in_exec)


def test_example_notebook_runs_in_a_jupyter_kernel(tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    example_cells = len(notebook.cells)
    # after the example: a cell with a Cython error, and one that runs after it
    notebook.cells.append(nbformat.v4.new_code_cell("%%cytool\ndef broken(x)\n    return x"))
    notebook.cells.append(nbformat.v4.new_code_cell("primes(10)"))
    NotebookClient(notebook, timeout=600, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = {}
    for cell in notebook.cells[:example_cells]:
        if cell.cell_type == "code":
            assert not [o for o in cell.outputs if o.output_type == "error"], (cell.source, cell.outputs)
            outputs[cell.source.splitlines()[0]] = cell.outputs
    assert outputs["primes(30)"][0]["data"]["text/plain"] == "[2, 3, 5, 7, 11, 13, 17, 19, 23, 29]"
    profiled = outputs["%%cytool --profile"][0]["data"]
    assert re.search(r"_cytool_cell_\w+\.pyx:4", profiled["text/plain"]) and "<iframe" in profiled["text/html"]
    statement = outputs["%cytool_profile len(buffers(200, 4096))"]
    assert statement[-1]["data"]["text/plain"] == "200"
    assert "body.cython" in outputs["%%cytool -a"][0]["data"]["text/html"]
    assert outputs["scaled(4.0)"][0]["data"]["text/plain"] == "10.0"
    # IPython shows a UsageError as one message on stderr (the cell fails, no traceback)
    shown = "".join(o.get("text", "") for o in notebook.cells[-2].outputs if o.output_type == "stream")
    assert "UsageError: cytool: Cython could not compile the cell: line 2, column 13: Expected ':'" in shown, shown
    assert "Traceback" not in shown and "cytool/" not in shown
    assert notebook.cells[-1].outputs[0]["data"]["text/plain"] == "[2, 3, 5, 7]"
