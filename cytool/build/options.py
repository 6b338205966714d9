"""What a build is asked for (BuildOptions) and what it produced (BuildResult)."""
from __future__ import annotations

from pathlib import Path

from cytool.project.settings import BuildSettings
from cytool.records import NamedTuple

TYPE_CHECKING = False  # typing itself costs milliseconds on every warm `cytool run`
if TYPE_CHECKING:
    from typing import Optional, Tuple

OPT_LEVELS = ("0", "1", "2", "3", "s", "g", "fast")
DEFAULT_OPT_LEVEL = "2"


class BuildOptions(NamedTuple):
    """How to build.

    opt_level: the C compiler's -O level; force: rebuild even on a cache hit;
    annotate: also write Cython's annotated HTML; verbose: print the commands run;
    directives: extra Cython directives "name=value" (the same as settings.directives);
    link_tracer: link libcytrace.so so that CYTOOL_PROFILE can start the tracer;
    settings: the command line's layer of build settings (-I, -l, --cplus, ...);
    module_name: the dotted module name, when the package folders do not tell it;
    read_setup_py: take settings from the project's setup.py (when there is one).
    """

    opt_level: str = DEFAULT_OPT_LEVEL
    force: bool = False
    annotate: bool = False
    verbose: bool = False
    directives: Tuple[str, ...] = ()
    link_tracer: bool = True
    settings: BuildSettings = BuildSettings()
    module_name: Optional[str] = None
    read_setup_py: bool = True


class BuildResult(NamedTuple):
    """One built module.

    module_name: dotted (`pkg.sub.mod`); module_path: the .so inside the cache entry;
    build_dir: the cache entry (<mod>.c, the .so, cython_debug/, build.json);
    source: absolute path of the .pyx; import_root: the folder that must be on sys.path
    for module_name to import; cached: True when no compilation was needed;
    annotation: Cython's annotated HTML (with --annotate); cimports: the project modules
    this one cimports, as (dotted name, .pyx path), which must be importable beside it.
    """

    module_name: str
    module_path: Path
    build_dir: Path
    source: Path
    cached: bool
    annotation: Optional[Path] = None
    import_root: Optional[Path] = None
    cimports: Tuple[Tuple[str, Path], ...] = ()
    opt_level: str = DEFAULT_OPT_LEVEL

    @property
    def short_name(self) -> str:
        return self.module_name.rpartition(".")[2]

    @property
    def c_file(self) -> Path:
        for suffix in (".c", ".cpp"):
            candidate = self.build_dir / f"{self.short_name}{suffix}"
            if candidate.exists():
                return candidate
        return self.build_dir / f"{self.short_name}.c"

    @property
    def debug_info(self) -> Path:
        return self.build_dir / "cython_debug" / f"cython_debug_info_{self.module_name}"
