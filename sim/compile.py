"""Compile plain-Python functions with numba, calls between them included.

``sim.formulas``, ``traces.queries`` and ``telemetry.observation`` hold functions that
Python calls as they are; ``sim.kernel`` needs them compiled. numba compiles a function
only if every function it calls is compiled too, and looks its callees up in the
function's own module: ``compiled`` clones each function with a namespace in which its
callees are their compiled versions, so the source stays plain Python (the device side
imports it without numba) and is written once.
"""

from __future__ import annotations

import types

from numba import njit


def compiled(module: types.ModuleType, names: tuple[str, ...]) -> tuple:
    """numba versions of ``module``'s functions ``names`` (callees first), in that order,
    cached on disk."""
    namespace = dict(vars(module))
    out = {}
    for name in names:
        f = getattr(module, name)
        clone = types.FunctionType(f.__code__, namespace, name, f.__defaults__, f.__closure__)
        clone.__qualname__, clone.__module__ = f.__qualname__, f.__module__
        out[name] = namespace[name] = njit(cache=True, error_model="numpy")(clone)
    return tuple(out[name] for name in names)
