"""Build hooks: compile the C runtime (runtime/Makefile) into cytool/_lib and the
CPython extension that drives the tracer, linked against that same libcytrace.so."""
import os
import subprocess
from pathlib import Path

from setuptools import Distribution, Extension, setup
from setuptools.command.build_ext import build_ext

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


def extensions():
    source = HERE / "runtime" / "python" / "cytrace_module.c"
    if not source.exists():
        return []
    return [
        Extension(
            "cytool._cytrace",
            sources=[str(source.relative_to(HERE))],
            include_dirs=["runtime/include"],
            libraries=["cytrace"],
            runtime_library_dirs=["$ORIGIN/_lib"],
            extra_compile_args=["-std=gnu11", "-fno-omit-frame-pointer"],
        )
    ]


setup(
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtWithRuntime},
    distclass=BinaryDistribution,
)
