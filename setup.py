"""Build hooks: compile the C runtime (runtime/Makefile) into cytool/_lib and the
CPython extension that drives the tracer, linked against that same libcytrace.so; install
cytool-autostart.pth into site-packages (CYTOOL_PROFILE for any Python process)."""
import os
import subprocess
from pathlib import Path

from setuptools import Distribution, Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BinaryDistribution(Distribution):
    """The wheel carries shared libraries even if no extension is listed."""

    def has_ext_modules(self):
        return True


class BuildExtWithRuntime(build_ext):
    """Run `make -C runtime` first, so libcytrace.so exists to link against."""

    def run(self):
        if self.inplace:
            lib_dir = HERE / "cytool" / "_lib"
        else:
            lib_dir = Path(self.build_lib).resolve() / "cytool" / "_lib"
        lib_dir.mkdir(parents=True, exist_ok=True)
        jobs = str(os.cpu_count() or 1)
        subprocess.check_call(["make", "-C", str(HERE / "runtime"), "-j", jobs, f"OUT={lib_dir}"])
        for ext in self.extensions:
            ext.library_dirs.append(str(lib_dir))
        super().run()


AUTOSTART_PTH = "cytool-autostart.pth"


class BuildPyWithAutostart(build_py):
    """Put cytool-autostart.pth at the root of what is installed (site-packages), so that
    `CYTOOL_PROFILE=path python anything.py` starts tracing (cytool/autostart.py)."""

    def run(self):
        super().run()
        self.copy_file(str(HERE / AUTOSTART_PTH), str(Path(self.build_lib) / AUTOSTART_PTH))

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [str(Path(self.build_lib) / AUTOSTART_PTH)]


def extensions():
    source = HERE / "runtime" / "python" / "cytrace_module.c"
    if not source.exists():
        return []
    walker = HERE / "runtime" / "python" / "python_frames.c"
    return [
        Extension(
            "cytool._cytrace",
            sources=[str(source.relative_to(HERE)), str(walker.relative_to(HERE))],
            include_dirs=["runtime/include"],
            libraries=["cytrace"],
            runtime_library_dirs=["$ORIGIN/_lib"],
            extra_compile_args=["-std=gnu11", "-fno-omit-frame-pointer"],
        )
    ]


setup(
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtWithRuntime, "build_py": BuildPyWithAutostart},
    distclass=BinaryDistribution,
)
