"""The packages form layers with no cycle, imports inside functions included:

    settings, distributed, traces, telemetry  ->  profiles  ->  sim  ->  envs  ->  agents
        ->  train, evaluate  ->  runtime_hooks

A package may import its own layer's other packages or any layer below, never one
above. The device side (controller, device loop, policy file, protocol, link) reaches
neither envs, agents (but the heuristics' numpy rules) nor Gymnasium, however deep the
imports go. docs/simulation.md
draws the layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = (
    ("settings", "distributed", "traces", "telemetry"),
    ("profiles",),
    ("sim",),
    ("envs",),
    ("agents",),
    ("train", "evaluate"),
    ("runtime_hooks",),
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
DEVICE_SIDE = (
    "controller",
    "device",
    "device_loop",
    "device_records",
    "policy_file",
    "protocol",
    "cloud_link",
    "netem",
    "c_policy",
    "bundle",
    "head",
    "onnx_policy",
)
# The literature's heuristics are numpy rules on the profile: the device may run them
# (``runtime_hooks.device --policy edgent``); nothing else of agents.
DEVICE_MAY_RUN = ("agents", "agents.heuristics", "agents.base", "agents.predictor")
NEVER_ON_DEVICE = (
    "envs",
    "agents",
    "gymnasium",
    "stable_baselines3",
    "sb3_contrib",
    "ray",
    "numba",
)


def _module_files() -> dict[str, Path]:
    """Every project module (``pkg.mod``, or ``train``) and its file."""
    out = {}
    for unit in RANK:
        folder, script = ROOT / unit, ROOT / f"{unit}.py"
        if script.is_file():
            out[unit] = script
        for path in sorted(folder.rglob("*.py")) if folder.is_dir() else ():
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every module a file imports (at its top or inside functions), with the line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno))
            found += [(f"{node.module}.{a.name}", node.lineno) for a in node.names]
    return found


MODULES = _module_files()


def test_every_import_points_down_or_sideways():
    upward = []
    for name, path in MODULES.items():
        unit = name.split(".")[0]
        for target, line in _imports(path):
            head = target.split(".")[0]
            if head in RANK and head != unit and RANK[head] > RANK[unit]:
                rel = path.relative_to(ROOT)
                upward.append(f"{rel}:{line} imports {target} ({unit} is below {head})")
    assert not upward, "imports against the layers:\n" + "\n".join(sorted(set(upward)))


def test_no_cycle_between_packages():
    edges: dict[str, set[str]] = {unit: set() for unit in RANK}
    for name, path in MODULES.items():
        unit = name.split(".")[0]
        for target, _ in _imports(path):
            head = target.split(".")[0]
            if head in RANK and head != unit:
                edges[unit].add(head)
    state: dict[str, int] = {}

    def visit(unit: str, trail: tuple[str, ...]) -> None:
        state[unit] = 1
        for nxt in sorted(edges[unit]):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join((*trail, unit, nxt))
            if nxt not in state:
                visit(nxt, (*trail, unit))
        state[unit] = 2

    for unit in sorted(edges):
        if unit not in state:
            visit(unit, ())


@pytest.mark.parametrize("module", DEVICE_SIDE)
def test_the_device_side_never_reaches_envs_agents_or_gymnasium(module):
    start = f"runtime_hooks.{module}"
    seen, todo, via = {start}, [start], {start: None}
    while todo:
        name = todo.pop()
        for target, _ in _imports(MODULES[name]):
            for candidate in (target, target.rsplit(".", 1)[0]):
                if candidate in MODULES and candidate not in seen:
                    seen.add(candidate)
                    via[candidate] = name
                    todo.append(candidate)
            head = target.split(".")[0]
            allowed = {target, target.rsplit(".", 1)[0]} & set(DEVICE_MAY_RUN)
            if head in NEVER_ON_DEVICE and not allowed:
                chain = [name]
                while via[chain[-1]] is not None:
                    chain.append(via[chain[-1]])
                pytest.fail(f"{start} reaches {target} via {' <- '.join(chain)}")


def test_the_layers_name_every_package():
    folders = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    unlisted = folders - set(RANK) - {"tests", "bench", "experiments"}
    assert not unlisted, f"packages in no layer: {sorted(unlisted)} (add them to LAYERS)"
