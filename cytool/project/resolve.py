"""The module a .pyx is and the settings it is built with, from every layer but its own
`# distutils:` comments (those are read with the source, on a cold build).

Precedence, highest first: the command line, [tool.cytool] (per-module tables over the
project-wide one), the project's setup.py, the module's `# distutils:` comments. A module
name given by setup.py (`Extension("memray._test_utils", ["src/memray/_memray_test_utils.pyx"])`)
is used unless --module-name is given.
"""
from __future__ import annotations

from pathlib import Path

from cytool.project.layout import ModuleLocation, locate_module
from cytool.project.pyproject import read_project_table
from cytool.project.settings import BuildSettings
from cytool.records import NamedTuple

TYPE_CHECKING = False  # typing itself costs milliseconds on every warm `cytool run`
if TYPE_CHECKING:
    from typing import Optional, Tuple


class ModuleTarget(NamedTuple):
    """A module to build: where it is, and its settings (without `# distutils:`)."""

    location: ModuleLocation
    settings: BuildSettings
    warnings: Tuple[str, ...] = ()


def resolve_module(
    path: Path,
    cli: BuildSettings = BuildSettings(),
    *,
    read_setup_py: bool = True,
    verbose: bool = False,
    module_name: Optional[str] = None,
) -> ModuleTarget:
    """Locate `path` and merge its settings. Raises CytoolError for a bad path, name,
    or pyproject.toml; a setup.py that fails only adds a warning."""
    requested_name = module_name if module_name is not None else cli.module_name
    location = locate_module(Path(path), requested_name)
    table = read_project_table(location.project_dir)
    warnings = []
    setup_layer = BuildSettings()
    if read_setup_py and table.read_setup_py:
        from cytool.project.setup_py import read_setup_py as read_setup

        info = read_setup(location.project_dir, verbose=verbose)
        if info is not None:
            if info.warning:
                warnings.append(info.warning)
            setup_layer = info.settings_for(location.source) or BuildSettings()
    if requested_name is None and setup_layer.module_name and setup_layer.module_name != location.name:
        location = locate_module(location.source, setup_layer.module_name)
    settings = cli.merged_over(table.settings_for(location.name).merged_over(setup_layer))
    return ModuleTarget(location, settings, tuple(warnings))
