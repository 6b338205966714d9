"""cytool run: the module runs as __main__ with argv, exit status and .pyx tracebacks."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

SCRIPT = """\
import sys

def helper(n):
    if n == 0:
        raise ValueError("n must not be zero")
    return 10 // n

def main():
    print("name:", __name__)
    print("argv:", sys.argv[1:])
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "exit":
        sys.exit(int(sys.argv[2]))
    if command == "raise":
        helper(0)
    print("result:", helper(5))

if __name__ == "__main__":
    main()
"""


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("run") / "prog.pyx"
    path.write_text(SCRIPT, encoding="utf-8")
    return path


def test_runs_main_block_with_argv(script: Path, run_cytool) -> None:
    done = run_cytool("run", script, "--", "one", "two words")
    assert done.returncode == 0, done.stderr
    assert "name: __main__" in done.stdout
    assert "argv: ['one', 'two words']" in done.stdout
    assert "result: 2" in done.stdout


def test_args_without_separator(script: Path, run_cytool) -> None:
    done = run_cytool("run", script, "plain")
    assert done.returncode == 0, done.stderr
    assert "argv: ['plain']" in done.stdout


def test_exit_status_is_the_scripts(script: Path, run_cytool) -> None:
    done = run_cytool("run", script, "--", "exit", "7")
    assert done.returncode == 7
    done = run_cytool("run", script, "--", "exit", "0")
    assert done.returncode == 0


def test_traceback_names_pyx_lines(script: Path, run_cytool) -> None:
    done = run_cytool("run", script, "--", "raise")
    assert done.returncode == 1
    err = done.stderr
    assert "ValueError: n must not be zero" in err
    assert 'prog.pyx", line 5, in prog.helper' in err
    assert 'raise ValueError("n must not be zero")' in err  # the .pyx source line is shown
    assert 'prog.pyx", line 15, in prog.main' in err
    assert "cytool/run.py" not in err and "importlib" not in err


def test_prebuilt_module(script: Path, run_cytool) -> None:
    built = run_cytool("build", script)
    assert built.returncode == 0, built.stderr
    module = built.stdout.strip()
    done = run_cytool("run", "--prebuilt", module, script, "--", "x")
    assert done.returncode == 0, done.stderr
    assert "argv: ['x']" in done.stdout and "name: __main__" in done.stdout


def test_module_importable_by_name_is_not_main(script: Path, run_cytool, tmp_path: Path) -> None:
    """Importing another module from the script's folder still works (sys.path[0])."""
    (tmp_path / "sibling.py").write_text("VALUE = 41\n")
    main = tmp_path / "usesibling.pyx"
    main.write_text("import sibling\nprint(sibling.VALUE + 1)\n")
    done = run_cytool("run", main)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "42"


def test_path_with_spaces_and_non_ascii(tmp_path: Path, run_cytool) -> None:
    folder = tmp_path / "dir with space ü"
    folder.mkdir()
    source = folder / "módulo.pyx"
    source.write_text(textwrap.dedent("""\
        import sys
        if __name__ == "__main__":
            print("ok", sys.argv[1])
            sys.exit(3)
        """), encoding="utf-8")
    done = run_cytool("run", source, "--", "ünï")
    assert done.returncode == 3, done.stderr
    assert done.stdout.strip() == "ok ünï"


def test_python_dash_m_and_console_script_agree(script: Path, run_cytool) -> None:
    import shutil
    import subprocess
    import sys

    console = Path(sys.executable).parent / "cytool"
    if not console.exists():
        console = Path(shutil.which("cytool") or "")
    assert console.is_file(), "the cytool console script is installed with the package"
    via_script = subprocess.run([str(console), "run", str(script), "--", "a"], capture_output=True, text=True)
    via_module = run_cytool("run", script, "--", "a")
    assert via_script.returncode == via_module.returncode == 0
    assert via_script.stdout == via_module.stdout


def test_version_and_help(run_cytool) -> None:
    done = run_cytool("--version")
    assert done.returncode == 0 and done.stdout.startswith("cytool ")
    done = run_cytool("run", "--help")
    assert done.returncode == 0 and "FILE.pyx" in done.stdout


def test_cytool_options_after_the_file(script: Path, run_cytool) -> None:
    done = run_cytool("run", script, "-O", "0", "-v", "--force", "--", "-x", "--flag")
    assert done.returncode == 0, done.stderr
    assert "argv: ['-x', '--flag']" in done.stdout
    assert " -O0 " in done.stderr  # -v shows the compile command, at the level asked for


def test_program_option_without_separator_is_refused(script: Path, run_cytool) -> None:
    done = run_cytool("run", script, "--not-ours")
    assert done.returncode == 2
    assert "unrecognized arguments: --not-ours" in done.stderr


@pytest.mark.parametrize("header", ["", "# distutils: define_macros = ANSWER=42\n"], ids=["plain", "distutils-header"])
def test_the_program_runs_without_cythons_own_compiled_modules(tmp_path: Path, run_cytool, header: str) -> None:
    """Building a .pyx before running it must not load Cython's compiled modules into the
    program's process: every Cython module of one version shares the first-registered
    generator, coroutine and function types, so the program's generators would run
    Cython's own machine code (no frame pointers: profile stacks lost their callers and
    showed a frame in Cython/Utils.so). The `# distutils:` header is still read."""
    source = tmp_path / "isolated.pyx"
    source.write_text(header + textwrap.dedent("""
        import sys

        cdef extern from *:
            '''
            #ifndef ANSWER
            #define ANSWER 0
            #endif
            '''
            int ANSWER

        def rows():
            yield 1

        loaded = sorted(m for m in sys.modules if m.startswith("Cython.") or m == "Cython")
        print("loaded:", loaded, "answer:", ANSWER, "rows:", list(rows()))
        """))
    done = run_cytool("run", source)
    assert done.returncode == 0, done.stderr
    answer = 42 if header else 0
    assert f"loaded: [] answer: {answer} rows: [1]" in done.stdout, done.stdout
