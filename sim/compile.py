"""Compile plain-Python functions with numba, calls between them included.

``sim.formulas``, ``traces.queries`` and ``telemetry.observation`` hold functions that
Python calls as they are; ``sim.kernel`` needs them compiled. numba compiles a function
only if every function it calls is compiled too, and looks its callees up in the
function's own module: ``compiled`` clones each function with a namespace in which its
callees are their compiled versions, so the source stays plain Python (the device side
imports it without numba) and is written once.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import types
from pathlib import Path

import numba
from numba import njit

ROOT = Path(__file__).resolve().parent.parent
# Every file whose functions end up in a compiled step. numba keys its disk cache on
# the decorated function's own file only: a change to a formula would leave the
# kernel that calls it stale. So the cache lives in a folder named after these files'
# contents, and any change to any of them compiles everything afresh.
SOURCES = (
    "sim/compile.py",
    "sim/formulas.py",
    "sim/kernel.py",
    "sim/faas_pool.py",
    "traces/queries.py",
    "telemetry/observation.py",
)


def _cache_dir() -> Path:
    """The project's ``.cache/numba/<hash>``, or the user's cache folder where the
    project's folder cannot be written (an installed copy)."""
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((ROOT / name).read_bytes())
    key = digest.hexdigest()[:16]
    for base in (ROOT / ".cache", Path.home() / ".cache" / "splitctl", Path(tempfile.gettempdir())):
        folder = base / "numba" / key
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    return folder


numba.config.CACHE_DIR = str(_cache_dir())


def compiled(module: types.ModuleType, names: tuple[str, ...]) -> tuple:
    """numba versions of ``module``'s functions ``names`` (callees first), in that order,
    cached on disk."""
    namespace = dict(vars(module))
    out = {}
    for name in names:
        f = getattr(module, name)
        clone = types.FunctionType(f.__code__, namespace, name, f.__defaults__, f.__closure__)
        clone.__qualname__, clone.__module__ = f.__qualname__, f.__module__
        out[name] = namespace[name] = njit(cache=True, error_model="numpy", inline="always")(clone)
    return tuple(out[name] for name in names)
