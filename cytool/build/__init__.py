"""Building Cython modules through cytool's cache.

    build_module(path, options)          one module (cytool.build.module)
    build_with_cimports(path, options)   a module and the project modules it cimports

Inside: `module` (the warm path), `compile` (Cython, the compiler, publication),
`depends` (what a build read), `loadcheck` (undefined symbols), `plan` (cimports),
`options` (BuildOptions, BuildResult).
"""
from cytool.build.module import build_module
from cytool.build.options import DEFAULT_OPT_LEVEL, OPT_LEVELS, BuildOptions, BuildResult
from cytool.build.plan import build_with_cimports

__all__ = ["BuildOptions", "BuildResult", "DEFAULT_OPT_LEVEL", "OPT_LEVELS", "build_module", "build_with_cimports"]
