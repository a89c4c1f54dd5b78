"""A scenario: everything the simulator needs besides the traces, as plain data.

profile + device + radio per trace family + cloud offer + battery + workload
(arrival process, deadline, episode length) + threshold grid + bandwidth probes +
reward weights. Loaded from TOML with every field validated (errors name the file
and field), with a built-in default in ``envs/default_scenario.toml``.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from profiles import DEFAULT_CATALOG, DEFAULT_PROFILE
from profiles.catalog import CatalogError, check_number

DEFAULT_SCENARIO = Path(__file__).resolve().parent / "default_scenario.toml"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ScenarioError(ValueError):
    """A scenario file is missing a field or holds an invalid value."""


@dataclass(frozen=True)
class Workload:
    arrival: str = "poisson"  # "poisson" or "periodic"
    rate_hz: float = 2.0
    deadline_s: float = 0.2
    episode_requests: int = 400
    sample_split: str = "val"  # profile split the requests draw images from


@dataclass(frozen=True)
class Battery:
    initial_min: float = 0.05  # initial charge drawn uniformly in [min, max] of capacity
    initial_max: float = 1.0
    capacity_j: float = 0.0  # 0: the device's battery from the catalog


@dataclass(frozen=True)
class Probe:
    interval_s: float = 0.0  # 0 disables probing
    bytes: float = 1500.0


@dataclass(frozen=True)
class RewardWeights:
    """r = accuracy*correct - latency*min(L/D, 4) - deadline_miss*[L > D]
    - energy*(1 + energy_battery_gain*(1 - battery))*E/energy_ref_j
    - money*C/money_ref_usd - leakage*leak"""

    accuracy: float = 1.0
    latency: float = 0.2
    deadline_miss: float = 1.0
    energy: float = 0.05
    energy_battery_gain: float = 15.0
    money: float = 0.05
    leakage: float = 0.1
    requests_per_charge: float = 20000.0  # energy_ref_j = battery capacity / this
    money_ref_usd: float = 1e-6  # $1 per million requests


@dataclass(frozen=True)
class Scenario:
    name: str = "default"
    profile: str = str(DEFAULT_PROFILE)
    catalog: str = str(DEFAULT_CATALOG)
    device: str = "mcu"
    cloud: str = "faas"
    radio_by_family: dict[str, str] = field(
        default_factory=lambda: {"hsdpa": "3g", "fcc": "wifi", "oboe": "lte", "5g": "5g"}
    )
    default_radio: str = "lte"
    thresholds: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.01)
    workload: Workload = field(default_factory=Workload)
    battery: Battery = field(default_factory=Battery)
    probe: Probe = field(default_factory=Probe)
    reward: RewardWeights = field(default_factory=RewardWeights)
    source: str = "built-in defaults"

    def radio_for(self, family: str) -> str:
        return self.radio_by_family.get(family, self.default_radio)

    def with_updates(self, **kwargs: Any) -> Scenario:
        return replace(self, **kwargs)


_NUMERIC_RULES: dict[type, dict[str, tuple[float, bool, float]]] = {
    # field: (low, low inclusive, high)
    Workload: {
        "rate_hz": (0.0, False, 1e4),
        "deadline_s": (0.0, False, 3600.0),
        "episode_requests": (1, True, 1e7),
    },
    Battery: {
        "initial_min": (0.0, False, 1.0),
        "initial_max": (0.0, False, 1.0),
        "capacity_j": (0.0, True, math.inf),
    },
    Probe: {"interval_s": (0.0, True, 1e6), "bytes": (1.0, True, 1e9)},
    RewardWeights: {
        name: (0.0, True, 1e6)
        for name in (
            "accuracy",
            "latency",
            "deadline_miss",
            "energy",
            "energy_battery_gain",
            "money",
            "leakage",
        )
    }
    | {"requests_per_charge": (0.0, False, 1e12), "money_ref_usd": (0.0, False, 1e6)},
}


def _section(cls: type, raw: Any, where: str):
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: expected a table")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ScenarioError(f"{where}: unknown field(s) {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        rule = _NUMERIC_RULES.get(cls, {}).get(name)
        if rule is None:
            values[name] = value
            continue
        low, inclusive, high = rule
        try:
            number = check_number(
                value, f"{where}.{name}", low=low, low_inclusive=inclusive, high=high
            )
        except CatalogError as exc:
            raise ScenarioError(str(exc)) from None
        values[name] = int(number) if name == "episode_requests" else number
    return cls(**values)


def _check_choice(value: Any, choices: tuple[str, ...], where: str) -> str:
    if value not in choices:
        raise ScenarioError(f"{where}: must be one of {', '.join(choices)}, got {value!r}")
    return value


def _resolve_path(value: Any, base: Path, where: str, default: str) -> str:
    if value in (None, "builtin"):
        return default
    if not isinstance(value, str) or not value:
        raise ScenarioError(f"{where}: expected a path or 'builtin'")
    path = Path(value)
    if not path.is_absolute():
        path = (base / path) if (base / path).exists() else PROJECT_ROOT / path
    return str(path)


def load_scenario(path: str | Path | None = None) -> Scenario:
    """Read a scenario TOML file (``None``: the built-in default)."""
    path = Path(path) if path is not None else DEFAULT_SCENARIO
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ScenarioError(f"{path}: scenario file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML ({exc})") from exc
    where = f"{path}:"
    known = {"scenario", "radio", "thresholds", "workload", "battery", "probe", "reward"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ScenarioError(f"{where} unknown table(s) {', '.join(unknown)}")
    head = raw.get("scenario")
    if not isinstance(head, dict):
        raise ScenarioError(f"{where} [scenario] table is missing")
    for key in ("device", "cloud"):
        if not isinstance(head.get(key), str):
            raise ScenarioError(f"{where} [scenario].{key}: missing or not a string")
    radio = raw.get("radio", {})
    if not isinstance(radio, dict) or not all(isinstance(v, str) for v in radio.values()):
        raise ScenarioError(f'{where} [radio]: expected family = "radio name" entries')
    radio = dict(radio)
    default_radio = radio.pop("default", "lte")
    grid = raw.get("thresholds", {}).get("grid", list(Scenario().thresholds))
    if not isinstance(grid, list) or len(grid) < 1:
        raise ScenarioError(f"{where} [thresholds].grid: expected a non-empty list")
    checked = []
    for i, value in enumerate(grid):
        try:
            checked.append(
                check_number(value, f"{where} [thresholds].grid[{i}]", low=0.0, high=2.0)
            )
        except CatalogError as exc:
            raise ScenarioError(str(exc)) from None
    if any(b <= a for a, b in zip(checked, checked[1:], strict=False)):
        raise ScenarioError(f"{where} [thresholds].grid: values must increase")
    workload = _section(Workload, raw.get("workload"), f"{where} [workload]")
    _check_choice(workload.arrival, ("poisson", "periodic"), f"{where} [workload].arrival")
    _check_choice(workload.sample_split, ("val", "test"), f"{where} [workload].sample_split")
    battery = _section(Battery, raw.get("battery"), f"{where} [battery]")
    if battery.initial_min > battery.initial_max:
        raise ScenarioError(f"{where} [battery].initial_min: exceeds initial_max")
    base = path.parent
    return Scenario(
        name=str(head.get("name", path.stem)),
        profile=_resolve_path(
            head.get("profile"), base, f"{where} [scenario].profile", str(DEFAULT_PROFILE)
        ),
        catalog=_resolve_path(
            head.get("catalog"), base, f"{where} [scenario].catalog", str(DEFAULT_CATALOG)
        ),
        device=head["device"],
        cloud=head["cloud"],
        radio_by_family=radio,
        default_radio=default_radio,
        thresholds=tuple(checked),
        workload=workload,
        battery=battery,
        probe=_section(Probe, raw.get("probe"), f"{where} [probe]"),
        reward=_section(RewardWeights, raw.get("reward"), f"{where} [reward]"),
        source=str(path),
    )
