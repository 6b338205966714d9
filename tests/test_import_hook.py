"""`cytool.install()` / `cytool.uninstall()`, the import hook (pyximport's replacement),
each check in a fresh interpreter: packages of .pyx modules, edits of the .pxd, .pxi and
headers a module read, settings from [tool.cytool] and `# distutils:`, imports racing
from several processes, clear build errors, and uninstall."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Optional



def python(code: str, cwd: Path, env: Optional[Dict[str, str]] = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=full_env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)


def write(root: Path, files: Dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_install_is_public_and_lazy(tmp_path: Path) -> None:
    done = python("""
        import sys, cytool
        assert "cytool.importer" not in sys.modules   # nothing loaded by `import cytool`
        assert callable(cytool.install) and callable(cytool.uninstall)
        assert "install" in dir(cytool)
        try:
            cytool.install(nonsense=1)
        except TypeError as error:
            print("TypeError:", error)
        """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "unknown build options ['nonsense']" in done.stdout


def test_package_with_cimports_and_uninstall(tmp_path: Path) -> None:
    write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/shapes.pxd": "cdef class Box:\n    cdef public int side\n    cdef int area(self)\n",
        "pkg/shapes.pyx": "cdef class Box:\n    def __init__(self, side):\n        self.side = side\n    cdef int area(self):\n        return self.side * self.side\n",
        "pkg/use.pyx": "from pkg.shapes cimport Box\n\ndef area_of(int side):\n    cdef Box box = Box(side)\n    return box.area()\n",
        "lone.pyx": "def hello():\n    return 'hi'\n",
    })
    done = python("""
        import cytool, sys
        cytool.install()
        from pkg import use
        import pkg.shapes
        print(use.area_of(7), pkg.shapes.Box.__module__, use.__file__.endswith("pkg/use.pyx"))
        cytool.uninstall()
        try:
            import lone
        except ModuleNotFoundError:
            print("lone not found after uninstall")
        cytool.install()
        import lone
        print(lone.hello())
        """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["49 pkg.shapes True", "lone not found after uninstall", "hi"]


def test_module_found_inside_a_package_folder_on_the_path(tmp_path: Path) -> None:
    # pkg/ itself is on sys.path: `import inner` imports pkg/inner.pyx as `inner`, as
    # Python would import pkg/inner.py
    write(tmp_path, {"pkg/__init__.py": "", "pkg/inner.pyx": "NAME = __name__\n"})
    done = python("""
        import sys, cytool
        sys.path.insert(0, "pkg")
        cytool.install()
        import inner
        print(inner.NAME)
        """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "inner"


def test_edits_of_pxd_pxi_and_headers_rebuild(tmp_path: Path) -> None:
    write(tmp_path, {
        "consts.pxd": "cdef enum:\n    FROM_PXD = 1\n",
        "more.pxi": "FROM_PXI = 10\n",
        "vals.h": "#define FROM_HEADER 100\n",
        "mod.pyx": """\
            from consts cimport FROM_PXD
            include "more.pxi"
            cdef extern from "vals.h":
                int FROM_HEADER

            def total():
                return FROM_PXD + FROM_PXI + FROM_HEADER
            """,
    })
    probe = "import cytool; cytool.install(); import mod; print(mod.total())"
    assert python(probe, tmp_path).stdout.strip() == "111"
    (tmp_path / "consts.pxd").write_text("cdef enum:\n    FROM_PXD = 2\n")
    assert python(probe, tmp_path).stdout.strip() == "112"
    (tmp_path / "more.pxi").write_text("FROM_PXI = 20\n")
    assert python(probe, tmp_path).stdout.strip() == "122"
    (tmp_path / "vals.h").write_text("#define FROM_HEADER 300\n")
    done = python(probe, tmp_path)
    assert done.stdout.strip() == "322", done.stderr


def test_settings_from_pyproject_and_distutils_comments(tmp_path: Path) -> None:
    write(tmp_path, {
        "pyproject.toml": '[tool.cytool]\ndefine-macros = ["FROM_TOML=5"]\n',
        "app/__init__.py": "",
        "app/cfg.pyx": """\
            # distutils: define_macros=FROM_COMMENT=7
            cdef extern from *:
                int FROM_TOML
                int FROM_COMMENT

            def values():
                return FROM_TOML, FROM_COMMENT
            """,
    })
    done = python("import cytool; cytool.install(); from app import cfg; print(cfg.values())", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(5, 7)"


def test_concurrent_imports_from_several_processes(tmp_path: Path, fresh_cache: Path) -> None:
    write(tmp_path, {"racer.pyx": "def square(int x):\n    return x * x\n"})
    code = "import cytool; cytool.install(); import racer; print(racer.square(12))"
    env = dict(os.environ, CYTOOL_CACHE_DIR=str(fresh_cache))
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert out.strip() == "144"
    # one build: the others waited for it and found it
    entries = list((fresh_cache / "entries").iterdir())
    assert len(entries) == 1, entries
    assert not list((fresh_cache / "tmp").iterdir())


def test_build_error_is_a_clear_import_error(tmp_path: Path) -> None:
    write(tmp_path, {"broken.pyx": "def f(x)\n    return x\n"})
    done = python("""
        import cytool
        cytool.install()
        try:
            import broken
        except ImportError as error:
            print(error)
        """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "cytool could not build" in done.stdout and "broken.pyx:1:" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_cytool_run_script_imports_pyx(tmp_path: Path, run_cytool) -> None:
    write(tmp_path, {"fast.pyx": "def twice(int x):\n    return 2 * x\n", "main.py": "import fast\nprint(fast.twice(21))\n"})
    done = run_cytool("run", "main.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "42"
