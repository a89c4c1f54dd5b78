"""A sweep file: what ``python -m agents.sweep`` trains, read and validated without Ray.

    [sweep]
    trials = 8                    # samples drawn from [space] (times each grid value)
    metric = "validation_reward"  # maximised; or "validation_accuracy"
    search = "optuna"             # or "random"
    scheduler = "asha"            # or "fifo" (every trial runs to the end)
    cpus_per_trial = 1
    # optional: search_seed, scenario, trace_source, seed (train.py's defaults)

    [ppo]                         # fixed settings, the sections of agents/hyperparams.toml
    total_timesteps = 20_000

    [space]                       # a dotted setting, or seed, or scenario
    "ppo.learning_rate" = { loguniform = [1e-4, 1e-3] }
    "ppo.ent_coef" = { uniform = [0.0, 0.05] }
    "ppo.n_steps" = { int = [64, 256] }          # both ends included
    "ppo.net_arch" = { choice = [[64, 64], [128, 128]] }
    seed = { grid = [0, 1, 2] }                  # every value, each trial (random search)

Every key, distribution and bound is checked here, before Ray starts: each end of a
range and each choice is laid over the fixed settings and validated as ``train.py``
would (``agents.hyperparams``); a scenario is loaded. Paths are relative to the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from agents.hyperparams import SECTIONS, build_hyperparams, load_hyperparams, merge_tables
from settings.tables import (
    InputError,
    SettingsError,
    check_choice,
    check_integer,
    check_keys,
    check_number,
    closest,
    read_toml,
)
from traces.sets import SOURCES

SEARCHES = ("optuna", "random")
SCHEDULERS = ("asha", "fifo")
# A metric names a column of a run's eval_curve.csv; a trial scores its best value.
METRICS = {"validation_reward": "mean_reward", "validation_accuracy": "accuracy"}
DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice", "grid")
RUN_KEYS = ("seed", "scenario")  # train.py flags a [space] may vary besides settings
TABLES = ("sweep", "space", *SECTIONS)
SWEEP_KEYS = ("trials", "metric", "search", "scheduler", "cpus_per_trial", "search_seed",
              "scenario", "trace_source", "seed")  # fmt: skip


class SweepError(SettingsError):
    """A sweep file is malformed; the message names the file, the table and the key."""


@dataclass(frozen=True)
class Dimension:
    """One key of ``[space]``: ``ppo.learning_rate`` (or ``seed``, ``scenario``) drawn
    from ``distribution`` over ``values`` (two ends of a range, or the choices)."""

    key: str
    distribution: str
    values: tuple

    def tune_domain(self):
        """The Ray Tune search space of this dimension."""
        from ray import tune

        a = self.values
        if self.distribution == "loguniform":
            return tune.loguniform(a[0], a[1])
        if self.distribution == "uniform":
            return tune.uniform(a[0], a[1])
        if self.distribution == "int":
            return tune.randint(a[0], a[1] + 1)  # Tune's upper end is exclusive
        values = [self.encode(v) for v in a]
        if self.distribution == "choice":
            return tune.choice(values)
        return tune.grid_search(values)

    @property
    def scalar(self) -> bool:
        return all(v is None or isinstance(v, bool | int | float | str) for v in self.values)

    def encode(self, value: Any) -> Any:
        """A choice as the search sees it: lists (``net_arch``) travel as JSON text,
        which every searcher can store (Optuna keeps scalars only)."""
        return value if self.scalar else json.dumps(value)

    def decode(self, value: Any) -> Any:
        return plain(value) if self.scalar or not isinstance(value, str) else json.loads(value)

    def upper(self) -> Any:
        """The largest value of a numeric dimension (ASHA's budget)."""
        return max(self.values)


@dataclass
class SweepSpec:
    """A validated sweep file."""

    path: Path
    trials: int
    metric: str
    search: str
    scheduler: str
    cpus_per_trial: float
    search_seed: int
    scenario: Path | None  # the fixed scenario (None: built-in) unless [space] varies it
    trace_source: str
    seed: int
    fixed: dict[str, dict] = field(default_factory=dict)  # sections laid over hyperparams
    space: list[Dimension] = field(default_factory=list)

    def param_space(self) -> dict:
        """Ray Tune's ``param_space``: one entry per dimension, keyed by its name."""
        return {d.key: d.tune_domain() for d in self.space}

    def decode(self, config: dict) -> dict:
        """What Tune drew (``config``) as plain values, keyed like ``[space]``."""
        dims = {d.key: d for d in self.space}
        return {k: dims[k].decode(v) if k in dims else plain(v) for k, v in config.items()}

    def trial_tables(self, config: dict) -> dict[str, dict]:
        """The settings of one trial: the fixed sections with the sampled values laid
        over them (``config`` is what Tune drew)."""
        tables = {name: dict(values) for name, values in self.fixed.items()}
        for key, value in self.decode(config).items():
            if key in RUN_KEYS:
                continue
            section, name = key.split(".", 1)
            tables.setdefault(section, {})[name] = value
        return tables

    def trial_run(self, config: dict) -> tuple[Path | None, int]:
        """The trial's scenario and seed (drawn, or the fixed ones)."""
        config = self.decode(config)
        scenario = config.get("scenario")
        return (Path(scenario) if scenario else self.scenario), int(config.get("seed", self.seed))

    def budget(self) -> tuple[int, int]:
        """``(max_t, grace_period)`` for ASHA, in decisions: the longest a trial can
        train and the decisions until its first validation."""
        hp = load_hyperparams(None, self.fixed or None)
        total, freq = hp.ppo.total_timesteps, hp.eval.freq
        for d in self.space:
            if d.key == "ppo.total_timesteps":
                total = d.upper()
            elif d.key == "eval.freq":
                freq = d.upper()
        return int(total), int(min(freq, total))

    def to_json(self) -> dict:
        return {
            "path": str(self.path), "trials": self.trials, "metric": self.metric,
            "search": self.search, "scheduler": self.scheduler,
            "cpus_per_trial": self.cpus_per_trial, "search_seed": self.search_seed,
            "scenario": None if self.scenario is None else str(self.scenario),
            "trace_source": self.trace_source, "seed": self.seed, "fixed": self.fixed,
            "space": {d.key: {d.distribution: list(d.values)} for d in self.space},
        }  # fmt: skip


def _numeric(values) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def plain(value: Any) -> Any:
    """Tune hands back numpy scalars and tuples; TOML and JSON want plain values."""
    if hasattr(value, "item") and not isinstance(value, list | tuple):
        return value.item()
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


# -- reading ------------------------------------------------------------------------
def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file; ``SweepError`` names the file and the key."""
    path = Path(path)
    raw = read_toml(path, "sweep", SweepError)
    try:
        return _from_tables(raw, path)
    except InputError as exc:  # a setting, or a scenario it names
        raise SweepError(f"{path}: {exc}") from None


def _from_tables(raw: dict, path: Path) -> SweepSpec:
    check_keys(raw, TABLES, "tables", SweepError)
    head = raw.get("sweep")
    if not isinstance(head, dict):
        raise SweepError("[sweep] table is missing")
    check_keys(head, SWEEP_KEYS, "[sweep]", SweepError)
    fixed = {name: raw[name] for name in SECTIONS if name in raw}
    base = load_hyperparams()
    tables = merge_tables(base.to_dict(), fixed, "fixed settings")  # unknown keys refused
    build_hyperparams(tables, "fixed settings")
    scenario = head.get("scenario")
    if scenario is not None:
        scenario = _scenario(scenario, path, "[sweep].scenario")
    spec = SweepSpec(
        path=path.resolve(),
        trials=check_integer(
            _need(head, "trials"), "[sweep].trials", low=1, high=100_000, error=SweepError
        ),  # fmt: skip
        metric=check_choice(
            head.get("metric", "validation_reward"), METRICS, "[sweep].metric", SweepError
        ),  # fmt: skip
        search=check_choice(
            head.get("search", "random"), SEARCHES, "[sweep].search", SweepError
        ),  # fmt: skip
        scheduler=check_choice(
            head.get("scheduler", "asha"), SCHEDULERS, "[sweep].scheduler", SweepError
        ),  # fmt: skip
        cpus_per_trial=check_number(
            head.get("cpus_per_trial", 1),
            "[sweep].cpus_per_trial",
            low=0,
            low_inclusive=False,
            high=1024,
            error=SweepError,
        ),  # fmt: skip
        search_seed=check_integer(
            head.get("search_seed", 0),
            "[sweep].search_seed",
            low=0,
            high=2**32 - 1,
            error=SweepError,
        ),  # fmt: skip
        scenario=scenario,
        trace_source=check_choice(
            head.get("trace_source", "auto"), SOURCES, "[sweep].trace_source", SweepError
        ),  # fmt: skip
        seed=check_integer(
            head.get("seed", 0), "[sweep].seed", low=0, high=2**32 - 1, error=SweepError
        ),  # fmt: skip
        fixed=fixed,
    )
    space = raw.get("space", {})
    if not isinstance(space, dict) or not space:
        raise SweepError("[space]: expected at least one key to sweep, e.g. "
                         '"ppo.learning_rate" = { loguniform = [1e-4, 1e-3] }')  # fmt: skip
    spec.space = [_dimension(key, value, spec, tables) for key, value in _leaves(space)]
    if spec.search == "optuna" and any(d.distribution == "grid" for d in spec.space):
        raise SweepError('[space]: grid needs search = "random" (Optuna samples, it does '
                         "not enumerate); use choice")  # fmt: skip
    return spec


def _need(table: dict, key: str) -> Any:
    if key not in table:
        raise SweepError(f"[sweep].{key}: missing")
    return table[key]


def _leaves(space: dict, prefix: str = ""):
    """``(dotted key, {distribution: values})`` for every key of ``[space]``, whether
    written ``"ppo.gamma" = {...}`` or as a nested table ``[space.ppo] gamma = {...}``."""
    for key, value in space.items():
        if not prefix and key in SECTIONS and isinstance(value, dict):
            yield from _leaves(value, f"{key}.")
        else:
            yield f"{prefix}{key}", value


def _is_setting(key: str) -> bool:
    section, _, name = key.partition(".")
    return section in SECTIONS and name in {f.name for f in fields(SECTIONS[section])}


def _dimension(key: str, value: Any, spec: SweepSpec, tables: dict) -> Dimension:
    where = f"[space].{key}" if "." not in key else f'[space]."{key}"'
    if not _is_setting(key) and key not in RUN_KEYS:
        section = key.partition(".")[0]
        if section in SECTIONS:
            names = [f"{section}.{f.name}" for f in fields(SECTIONS[section])]
        else:
            names = [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in fields(cls)]
        check_keys({key: None}, [*names, *RUN_KEYS], "[space]", SweepError)
    if not isinstance(value, dict) or len(value) != 1:
        raise SweepError(f"{where}: expected one distribution, e.g. {{ uniform = [a, b] }}, "
                         f"got {value!r}")  # fmt: skip
    ((distribution, values),) = value.items()
    if distribution not in DISTRIBUTIONS:
        hint = closest(distribution, DISTRIBUTIONS)
        tip = f"did you mean '{hint}'? " if hint else ""
        raise SweepError(f"{where}: unknown distribution '{distribution}'; {tip}known: "
                         f"{', '.join(DISTRIBUTIONS)}")  # fmt: skip
    if not isinstance(values, list) or not values:
        raise SweepError(f"{where}: {distribution} takes a non-empty list, got {values!r}")
    values = _bounds(where, distribution, values)
    for v in values:  # each end or choice, checked as train.py would check it
        _check_value(key, v, where, spec, tables)
    if key == "scenario":
        values = tuple(str(_scenario(v, spec.path, where)) for v in values)
    _check_type(key, distribution, where)
    return Dimension(key, distribution, values)


def _bounds(where: str, distribution: str, values: list) -> tuple:
    if distribution in ("choice", "grid"):
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise SweepError(f"{where}: {distribution} lists a value twice: {values!r}")
        return tuple(values)
    if len(values) != 2 or not _numeric(values):
        raise SweepError(f"{where}: {distribution} takes [low, high], got {values!r}")
    low, high = values
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise SweepError(f"{where}: {distribution} needs finite low < high, got {values!r}")
    if distribution == "loguniform" and low <= 0:
        raise SweepError(f"{where}: loguniform needs low > 0, got {values!r}")
    if distribution == "int" and not all(isinstance(v, int) for v in values):
        raise SweepError(f"{where}: int takes two integers, got {values!r}")
    return (low, high)


def _check_type(key: str, distribution: str, where: str) -> None:
    """A continuous distribution over a setting that must be an integer (or a list,
    a name, a flag) would fail in every trial: refuse it now."""
    if distribution not in ("loguniform", "uniform"):
        return
    if key in RUN_KEYS:
        raise SweepError(f"{where}: {key} takes int, choice or grid, not {distribution}")
    section, name = key.split(".", 1)
    kind = {f.name: f.metadata["rule"].kind for f in fields(SECTIONS[section])}[name]
    if kind != "number":
        raise SweepError(f"{where}: {key} is not a real number; use int, choice or grid, "
                         f"not {distribution}")  # fmt: skip


def _check_value(key: str, value: Any, where: str, spec: SweepSpec, tables: dict) -> None:
    if key == "seed":
        check_integer(value, where, low=0, high=2**32 - 1, error=SweepError)
    elif key == "scenario":
        if not isinstance(value, str):
            raise SweepError(f"{where}: a scenario is a path, got {value!r}")
    else:
        section, name = key.split(".", 1)
        trial = merge_tables(tables, {section: {name: value}}, where)
        try:
            build_hyperparams(trial, where)
        except SettingsError as exc:
            raise SweepError(str(exc)) from None


def _scenario(value: Any, sweep_file: Path, where: str) -> Path:
    """A scenario path relative to the sweep file, loaded (and so checked) now."""
    from sim.scenario import load_scenario

    if not isinstance(value, str) or not value:
        raise SweepError(f"{where}: a scenario is a path, got {value!r}")
    path = Path(value)
    if not path.is_absolute():
        path = (sweep_file.parent / path).resolve()
    try:
        load_scenario(path).check_references()  # model, data and profile together
    except InputError as exc:
        raise SweepError(f"{where}: {exc}") from None
    return path


# -- writing a trial's settings ---------------------------------------------------------
def to_toml(tables: dict[str, dict]) -> str:
    """Settings tables as TOML (numbers, flags, strings and lists of them), the
    ``--config`` file of a trial: ``python train.py --config`` reproduces it."""
    lines = []
    for section, values in tables.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")
