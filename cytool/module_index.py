"""The module index: for a Cython extension module, found by its GNU build-id, where its
generated C file and Cython debug XML are, and the digests of its sources.

Written for every module cytool builds (cache entries) and every module `cytool develop`
builds (the project's own build, in place). Read by reports (a capture names loaded
objects by build-id) and by `cytool debug` (which hands gdb the index folder, so the
cy-* commands find the debug XML of a module when its objfile loads, however it was
built). One JSON file per module: `<cache>/index/<build-id>.json`:

    {"build_id": hex, "module": "pkg.mod", "module_file": path, "c_file": path or null,
     "debug_info": path or null, "sources": {path: sha256}, "opt_level": "2" or null,
     "built_by": "cytool build" | "cytool develop", "created": unix time}
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Dict, Mapping, Optional

from cytool.cache import BuildCache, hash_file
from cytool.elf import build_id as read_build_id

_BUILD_ID = re.compile(r"^[0-9a-f]{8,128}$")


def index_dir(cache: Optional[BuildCache] = None) -> Path:
    return (cache or BuildCache()).root / "index"


def record_module(
    module_file: Path,
    module: str,
    *,
    c_file: Optional[Path],
    debug_info: Optional[Path],
    sources: Mapping[str, Optional[str]],
    opt_level: Optional[str],
    built_by: str,
    cache: Optional[BuildCache] = None,
) -> Optional[str]:
    """Index a built module under its build-id; returns the build-id (None when the
    module has none, e.g. linked with --build-id=none)."""
    found = read_build_id(module_file)
    if found is None:
        return None
    cache = cache or BuildCache()
    folder = cache.prepare_folder("index")
    entry = {
        "build_id": found,
        "module": module,
        "module_file": str(module_file),
        "c_file": str(c_file) if c_file else None,
        "debug_info": str(debug_info) if debug_info else None,
        "sources": dict(sources),
        "opt_level": opt_level,
        "built_by": built_by,
        "created": time.time(),
    }
    cache.atomic_write(folder / f"{found}.json", json.dumps(entry, indent=1))
    return found


def lookup(build_id: str, cache: Optional[BuildCache] = None) -> Optional[Dict[str, object]]:
    """The index entry of a build-id, or None (unknown, unreadable, or not hex)."""
    if not _BUILD_ID.match(build_id):
        return None
    path = index_dir(cache) / f"{build_id}.json"
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) and entry.get("build_id") == build_id else None


def source_digests(paths) -> Dict[str, Optional[str]]:  # paths: Iterable[Path]
    return {str(p): hash_file(Path(p)) for p in paths}
