"""Load and validate the device / radio / cloud catalog (``profiles/catalog.toml``).

Every field is checked (present, a number, finite, in range); an error names the
file, the table and the field. The result is plain frozen dataclasses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from profiles import DEFAULT_CATALOG
from settings.tables import InputError, check_keys, check_number, read_toml


class CatalogError(InputError):
    """The catalog is missing a field, or a field holds an invalid value."""


@dataclass(frozen=True)
class Device:
    """A device. Its compute times are the profile's host times scaled by ``gflops``,
    unless it holds times measured on it for one model (``python -m
    profiles.measure_device``): ``block_s``, ``exit_s`` (0 where the model has no exit)
    and ``encode_s`` (per cut and level), valid for the model whose hash is
    ``model_hash``."""

    name: str
    description: str
    gflops: float
    active_power_w: float
    idle_power_w: float
    battery_j: float
    model_hash: str | None = None
    block_s: tuple[float, ...] | None = None
    exit_s: tuple[float, ...] | None = None
    encode_s: tuple[tuple[float, ...], ...] | None = None
    measured_on: str | None = None

    @property
    def measured(self) -> bool:
        return self.model_hash is not None


@dataclass(frozen=True)
class Radio:
    name: str
    description: str
    per_mbps_w: float
    base_w: float
    tail_s: float
    tail_w: float
    uplink_ratio: float
    rtt_s: float
    max_uplink_bps: float = math.inf

    def transmit_power_w(self, uplink_bps: float) -> float:
        """Power while sending at ``uplink_bps`` (Huang et al. 2012: beta + alpha_u * u)."""
        return self.base_w + self.per_mbps_w * uplink_bps / 1e6

    def uplink(self, trace):
        """A measured capacity trace as this radio's uplink: times ``uplink_ratio``,
        capped at ``max_uplink_bps``, with this radio's RTT."""
        return trace.scaled(self.uplink_ratio, self.max_uplink_bps, self.rtt_s)


@dataclass(frozen=True)
class Cloud:
    """A cloud offer: a reserved VM (``kind = "iaas"``), serverless functions
    (``"faas"``), or a ``"hybrid"`` of two other entries: the VM ``vm`` runs the shallow
    cloud blocks and their exits, the functions ``functions`` the deep ones, split
    where it costs least at ``rate_hz`` offloaded requests per second (``sim.hybrid``).
    A hybrid holds no speed or price of its own (its parts do); its ``cold_start_s``
    and ``keep_alive_s`` are its functions', what can go cold."""

    name: str
    description: str
    kind: str  # "iaas", "faas" or "hybrid"
    speedup: float = 1.0  # required for iaas and faas
    overhead_s: float = 0.0  # required for iaas and faas
    price_per_s: float = 0.0
    utilisation: float = 1.0
    price_per_gb_s: float = 0.0
    price_per_request: float = 0.0
    memory_gb: float = 0.0
    billing_granularity_s: float = 0.0
    cold_start_s: float = 0.0
    keep_alive_s: float = 0.0
    # Its energy while it serves a request (carbon): the power of the vCPU it keeps busy
    # and its data centre's PUE, on the grid of its region (a [grids.*] entry). The
    # defaults are Cloud Carbon Footprint's averages for AWS (3.5 W per busy vCPU, PUE
    # 1.135; cloudcarbonfootprint.org/docs/methodology).
    grid: str = "world"
    watts: float = 3.5
    pue: float = 1.135
    # A hybrid's parts (names of [clouds.*] entries) and the offloaded requests per
    # second, all its devices together, that its split is chosen for.
    vm: str = ""
    functions: str = ""
    rate_hz: float = 0.0


@dataclass(frozen=True)
class Grid:
    """An electricity grid: grams of CO2e per kWh generated, and where the figure is from."""

    name: str
    description: str
    g_per_kwh: float
    source: str


# A catalog without a [grids] table gets the world average (Ember's yearly electricity
# data for 2023, as Statista reports it: 481 gCO2/kWh for the global power sector).
WORLD = Grid(
    "world",
    "the world's average power sector",
    481.0,
    "Ember, Yearly Electricity Data 2023 (global power sector, 481 gCO2/kWh)",
)


@dataclass(frozen=True)
class Catalog:
    path: Path
    devices: dict[str, Device]
    radios: dict[str, Radio]
    clouds: dict[str, Cloud]
    data_usd_per_gb: float
    grids: dict[str, Grid]

    def device(self, name: str) -> Device:
        return _pick(self.devices, name, "devices", self.path)

    def radio(self, name: str) -> Radio:
        return _pick(self.radios, name, "radios", self.path)

    def cloud(self, name: str) -> Cloud:
        return _pick(self.clouds, name, "clouds", self.path)


def _pick(table: dict, name: str, kind: str, path: Path):
    if name not in table:
        raise CatalogError(f"{path}: no [{kind}.{name}]; known: {', '.join(sorted(table))}")
    return table[name]


# Field rules: (required, lower bound, lower bound inclusive, upper bound).
_POSITIVE = (True, 0.0, False, math.inf)
_NON_NEGATIVE = (True, 0.0, True, math.inf)
_OPTIONAL_NN = (False, 0.0, True, math.inf)
_RULES: dict[type, dict[str, tuple]] = {
    Device: {
        "gflops": _POSITIVE,
        "active_power_w": _POSITIVE,
        "idle_power_w": _NON_NEGATIVE,
        "battery_j": _POSITIVE,
    },
    Radio: {
        "per_mbps_w": _NON_NEGATIVE,
        "base_w": _NON_NEGATIVE,
        "tail_s": _NON_NEGATIVE,
        "tail_w": _NON_NEGATIVE,
        "uplink_ratio": (True, 0.0, False, 1.0),
        "rtt_s": _NON_NEGATIVE,
        "max_uplink_bps": (False, 0.0, False, math.inf),
    },
    Cloud: {
        "speedup": _POSITIVE,
        "overhead_s": _NON_NEGATIVE,
        "price_per_s": _OPTIONAL_NN,
        "utilisation": (False, 0.0, False, 1.0),
        "price_per_gb_s": _OPTIONAL_NN,
        "price_per_request": _OPTIONAL_NN,
        "memory_gb": _OPTIONAL_NN,
        "billing_granularity_s": _OPTIONAL_NN,
        "cold_start_s": _OPTIONAL_NN,
        "keep_alive_s": _OPTIONAL_NN,
        "watts": _OPTIONAL_NN,
        "pue": (False, 1.0, True, 10.0),
    },
    Grid: {"g_per_kwh": (True, 0.0, True, 5000.0)},
}
_REQUIRED_BY_KIND = {
    "iaas": ("price_per_s",),
    "faas": ("price_per_gb_s", "price_per_request", "memory_gb", "cold_start_s", "keep_alive_s"),
}


# Text fields besides the description: a grid's source is required, a cloud's grid not.
_TEXT = {Grid: ("source",), Cloud: ("grid",)}


def _build(cls: type, name: str, raw: Any, where: str):
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: expected a table")
    check_keys(raw, [f.name for f in fields(cls) if f.name != "name"], where, CatalogError)
    values: dict[str, Any] = {"name": name}
    description = raw.get("description")
    if not isinstance(description, str) or not description:
        raise CatalogError(f"{where}.description: missing or not a string")
    values["description"] = description
    if cls is Cloud:
        kind = raw.get("kind")
        if kind == "hybrid":
            return _build_hybrid(name, raw, where, description)
        if kind not in _REQUIRED_BY_KIND:
            raise CatalogError(f"{where}.kind: must be 'iaas', 'faas' or 'hybrid', got {kind!r}")
        values["kind"] = kind
        for key in ("vm", "functions", "rate_hz"):
            if key in raw:
                raise CatalogError(f'{where}.{key}: only a kind = "hybrid" cloud has it')
        for field_name in _REQUIRED_BY_KIND[kind]:
            if field_name not in raw:
                raise CatalogError(f"{where}.{field_name}: missing (required for {kind})")
    if cls is Device:
        values.update(_measured_times(raw, where))
    for key in _TEXT.get(cls, ()):
        if key in raw or key == "source":
            text = raw.get(key)
            if not isinstance(text, str) or not text:
                raise CatalogError(f"{where}.{key}: missing or not a string")
            values[key] = text
    for field_name, (required, low, inclusive, high) in _RULES[cls].items():
        if field_name not in raw:
            if required:
                raise CatalogError(f"{where}.{field_name}: missing")
            continue
        at = f"{where}.{field_name}"
        values[field_name] = _number(raw[field_name], at, low, inclusive, high)
    return cls(**values)


_HYBRID_KEYS = ("description", "kind", "vm", "functions", "rate_hz")


def _build_hybrid(name: str, raw: dict, where: str, description: str) -> Cloud:
    """A hybrid entry: its parts' names and its rate; the parts are checked once every
    cloud is read (``_link_hybrids``). Speeds and prices belong to the parts, so a key
    of theirs here is refused rather than ignored."""
    extra = sorted(set(raw) - set(_HYBRID_KEYS))
    if extra:
        raise CatalogError(
            f"{where}.{extra[0]}: not a field of a hybrid cloud (it takes "
            f"{', '.join(_HYBRID_KEYS)}; speeds and prices go on its vm and functions entries)"
        )
    parts = {}
    for key in ("vm", "functions"):
        value = raw.get(key)
        if not isinstance(value, str) or not value:
            raise CatalogError(f"{where}.{key}: missing or not a string (a [clouds.*] name)")
        parts[key] = value
    if "rate_hz" not in raw:
        raise CatalogError(f"{where}.rate_hz: missing (required for hybrid)")
    rate = _number(raw["rate_hz"], f"{where}.rate_hz", 0.0, False, 1e7)
    return Cloud(name=name, description=description, kind="hybrid", rate_hz=rate, **parts)


def _link_hybrids(clouds: dict[str, Cloud], path: Path) -> dict[str, Cloud]:
    """Each hybrid's ``vm`` must name an iaas entry and ``functions`` a faas one; the
    hybrid takes its functions' cold start and keep-alive (what can go cold)."""
    linked = dict(clouds)
    for name, cloud in clouds.items():
        if cloud.kind != "hybrid":
            continue
        for key, kind in (("vm", "iaas"), ("functions", "faas")):
            part = getattr(cloud, key)
            if part not in clouds or clouds[part].kind != kind:
                got = f"of kind '{clouds[part].kind}'" if part in clouds else "not an entry"
                known = sorted(n for n, c in clouds.items() if c.kind == kind)
                raise CatalogError(
                    f"{path}: [clouds.{name}].{key}: '{part}' is {got}; it must name a "
                    f'kind = "{kind}" cloud (known: {", ".join(known) or "none"})'
                )
        fn = clouds[cloud.functions]
        linked[name] = replace(cloud, cold_start_s=fn.cold_start_s, keep_alive_s=fn.keep_alive_s)
    return linked


def _number(value: Any, where: str, low: float, inclusive: bool, high: float) -> float:
    """A number of the catalog in range, the range said as a reader would (``must be
    > 0``, ``must be in (0, 1]``) rather than as the bounds' floats."""
    value = check_number(value, where, error=CatalogError)  # a number, not NaN
    below = value < low if inclusive else value <= low
    if below or value > high:
        need = f"{'>=' if inclusive else '>'} {low:g}"
        if high != math.inf:
            need = f"in {'[' if inclusive else '('}{low:g}, {high:g}]"
        raise CatalogError(f"{where}: {value} out of range (must be {need})")
    return value


_MEASURED = ("model_hash", "block_s", "exit_s", "encode_s", "measured_on")


def _measured_times(raw: dict, where: str) -> dict:
    """A device's measured times, all of them or none, each a list of seconds >= 0."""
    given = [k for k in _MEASURED if k in raw]
    if not given:
        return {}
    missing = [k for k in _MEASURED if k not in raw]
    if missing:
        raise CatalogError(f"{where}: measured times need {', '.join(missing)} too")
    if not isinstance(raw["model_hash"], str) or not isinstance(raw["measured_on"], str):
        raise CatalogError(f"{where}.model_hash / measured_on: expected strings")

    def seconds(values, name: str) -> tuple[float, ...]:
        if not isinstance(values, list) or not values:
            raise CatalogError(f"{where}.{name}: expected a list of seconds")
        return tuple(
            _number(v, f"{where}.{name}[{i}]", 0.0, True, 3600.0) for i, v in enumerate(values)
        )

    block_s, exit_s = seconds(raw["block_s"], "block_s"), seconds(raw["exit_s"], "exit_s")
    if len(exit_s) != len(block_s):
        raise CatalogError(f"{where}.exit_s: {len(exit_s)} values for {len(block_s)} blocks")
    encode = raw["encode_s"]
    if not isinstance(encode, list) or len(encode) != len(block_s):
        raise CatalogError(f"{where}.encode_s: expected one list per cut 0..{len(block_s) - 1}")
    return {
        "model_hash": raw["model_hash"],
        "measured_on": raw["measured_on"],
        "block_s": block_s,
        "exit_s": exit_s,
        "encode_s": tuple(seconds(row, f"encode_s[{c}]") for c, row in enumerate(encode)),
    }


def load_catalog(path: str | Path = DEFAULT_CATALOG) -> Catalog:
    path = Path(path)
    raw = read_toml(path, "catalog", CatalogError)
    known = ("devices", "radios", "clouds", "grids", "data_plan")
    check_keys(raw, known, str(path), CatalogError)
    tables = {}
    for key, cls in (("devices", Device), ("radios", Radio), ("clouds", Cloud), ("grids", Grid)):
        section = raw.get(key)
        if key == "grids" and section is None:
            tables[key] = {"world": WORLD}
            continue
        if not isinstance(section, dict) or not section:
            raise CatalogError(f"{path}: [{key}] is missing or empty")
        tables[key] = {
            name: _build(cls, name, body, f"{path}: [{key}.{name}]")
            for name, body in section.items()
        }
    tables["clouds"] = _link_hybrids(tables["clouds"], path)
    for name, cloud in tables["clouds"].items():
        if cloud.grid not in tables["grids"]:
            raise CatalogError(
                f"{path}: [clouds.{name}].grid: '{cloud.grid}' is not a [grids.*] entry "
                f"(known: {', '.join(sorted(tables['grids']))})"
            )
    plan = raw.get("data_plan")
    if not isinstance(plan, dict) or "usd_per_gb" not in plan:
        raise CatalogError(f"{path}: [data_plan].usd_per_gb: missing")
    check_keys(plan, ("usd_per_gb",), f"{path}: [data_plan]", CatalogError)
    at = f"{path}: [data_plan].usd_per_gb"
    usd_per_gb = _number(plan["usd_per_gb"], at, 0.0, True, math.inf)
    return Catalog(
        path, tables["devices"], tables["radios"], tables["clouds"], usd_per_gb, tables["grids"]
    )
