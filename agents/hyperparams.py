"""The training hyperparameters as typed settings (``agents/hyperparams.toml``).

The TOML file holds the values (in the spirit of rl-zoo3); these classes hold their
types and ranges. ``load_hyperparams(override)`` reads the file, lays a ``--config``
file over it (only known sections and keys, with the closest known key suggested for
a typo) and validates every value before anything is trained: ``gamma = "x"``,
``n_envs = 0`` or ``net_arch = "abc"`` is an error naming the file and the key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from settings.tables import (
    SettingsError,
    check_fields,
    check_keys,
    choice,
    custom,
    flag,
    from_table,
    integer,
    number,
    read_toml,
)

HYPERPARAMS = Path(__file__).resolve().parent / "hyperparams.toml"
SHAPINGS = ("none", "tail_potential", "regime")  # see envs/shaping.py
EXPERTS = ("oracle", "best_fixed_by_context")  # see agents/imitation.py


def _layers(value: Any, where: str) -> list[int]:
    """``net_arch``: a list of layer widths."""
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65536 for v in value
    ):
        raise ValueError(f"expected a list of layer widths (integers 1..65536), got {value!r}")
    return list(value)


@dataclass
class PPOSettings:
    """``[ppo]``: Stable-Baselines3 PPO and what the training environments do."""

    action_repeat: int = integer(low=1, high=10_000, doc="requests each decision is held for")
    total_timesteps: int = integer(low=1, high=10**10, doc="PPO steps (decisions)")
    n_envs: int = integer(low=1, high=1024)
    n_steps: int = integer(low=1, high=10**7, doc="per env and update")
    batch_size: int = integer(low=2, high=10**8)
    n_epochs: int = integer(low=1, high=10_000)
    learning_rate: float = number(low=0.0, low_inclusive=False, high=10.0)
    gamma: float = number(low=0.0, high=1.0)
    gae_lambda: float = number(low=0.0, high=1.0)
    clip_range: float = number(low=0.0, low_inclusive=False, high=1e3)
    ent_coef: float = number(low=0.0, high=1e3)
    vf_coef: float = number(low=0.0, high=1e3)
    max_grad_norm: float = number(low=0.0, low_inclusive=False, high=1e6)
    net_arch: list[int] = custom(_layers)
    episode_requests: int = integer(low=1, high=10_000_000)
    accuracy_credit: str = choice(choices=("expected", "realized"))
    reward_shaping: str = choice(choices=SHAPINGS)
    shaping_tail_share: float = number(low=0.0, high=1.0)

    def __post_init__(self) -> None:
        check_fields(self, "ppo")
        if self.n_steps * self.n_envs < 2:  # PPO needs two samples to normalise advantages
            raise SettingsError(
                f"[ppo].n_steps: n_steps x n_envs is {self.n_steps * self.n_envs}, need >= 2"
            )


@dataclass
class ImitationSettings:
    """``[imitation]``: the optional warm start that copies an expert first."""

    steps: int = integer(low=0, high=10**9, doc="0: start PPO from scratch")
    expert: str = choice(choices=EXPERTS)
    expert_episodes: int = integer(low=1, high=10**6)
    freeze_obs_normalization: bool = flag()
    epochs: int = integer(low=1, high=10_000)
    learning_rate: float = number(low=0.0, low_inclusive=False, high=10.0)

    def __post_init__(self) -> None:
        check_fields(self, "imitation")


@dataclass
class NormalizeSettings:
    """``[normalize]``: VecNormalize."""

    norm_obs: bool = flag()
    norm_reward: bool = flag()
    clip_obs: float = number(low=0.0, low_inclusive=False, high=1e6)

    def __post_init__(self) -> None:
        check_fields(self, "normalize")


@dataclass
class EvalSettings:
    """``[eval]``: validation during training, and checkpoints."""

    freq: int = integer(low=1, high=10**10, doc="PPO steps between validations")
    episodes_per_family: int = integer(low=1, high=10_000)
    checkpoint_freq: int = integer(low=1, high=10**10, doc="PPO steps between checkpoints")

    def __post_init__(self) -> None:
        check_fields(self, "eval")


SECTIONS = {
    "ppo": PPOSettings,
    "imitation": ImitationSettings,
    "normalize": NormalizeSettings,
    "eval": EvalSettings,
}


@dataclass
class Hyperparams:
    ppo: PPOSettings
    imitation: ImitationSettings
    normalize: NormalizeSettings
    eval: EvalSettings

    def to_dict(self) -> dict:
        return asdict(self)


def merge_tables(base: dict, override: dict, where: str) -> dict:
    """``base`` with ``override``'s sections laid over it; unknown sections and keys
    are refused (a typo would otherwise be silently ignored)."""
    check_keys(override, base, where)
    merged = {name: dict(values) for name, values in base.items()}
    for section, values in override.items():
        if not isinstance(values, dict):
            raise SettingsError(f"{where} [{section}]: expected a table, got {values!r}")
        check_keys(values, base[section], f"{where} [{section}]")
        merged[section].update(values)
    return merged


def build_hyperparams(tables: dict, where: str) -> Hyperparams:
    check_keys(tables, SECTIONS, where)
    try:
        return Hyperparams(
            **{
                name: from_table(cls, tables.get(name), f"[{name}]")
                for name, cls in SECTIONS.items()
            }
        )
    except SettingsError as exc:
        raise SettingsError(f"{where}: {exc}") from None


def load_hyperparams(
    override: str | Path | None = None, updates: dict[str, dict] | None = None
) -> Hyperparams:
    """The shipped hyperparameters, ``override`` (a TOML file) laid over them, then
    ``updates`` (``{"ppo": {"total_timesteps": 100}}``, from command-line flags)."""
    tables = read_toml(HYPERPARAMS, "hyperparameter", SettingsError)
    where = str(HYPERPARAMS)
    if override is not None:
        where = str(override)
        tables = merge_tables(
            tables, read_toml(Path(override), "config", SettingsError), str(override)
        )
    if updates:
        tables = merge_tables(tables, updates, "command line")
    return build_hyperparams(tables, where)
