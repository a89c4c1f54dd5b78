"""PPO policies: a trained run directory as a ``Policy``, with its normalisation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.run_files import verify
from envs.wrappers import distinct_actions
from settings.tables import InputError


class RunError(InputError):
    """A run directory is missing, incomplete, or made for another scenario."""


@dataclass(frozen=True)
class ObsNormalizer:
    """VecNormalize's observation transform, as plain numbers (JSON, no pickle)."""

    mean: np.ndarray
    var: np.ndarray
    clip: float
    epsilon: float = 1e-8

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        z = (obs - self.mean) / np.sqrt(self.var + self.epsilon)
        return np.clip(z, -self.clip, self.clip).astype(np.float32)

    def to_json(self) -> dict:
        return {
            "mean": self.mean.tolist(),
            "var": self.var.tolist(),
            "clip": self.clip,
            "epsilon": self.epsilon,
        }

    @classmethod
    def from_json(cls, d: dict) -> ObsNormalizer:
        return cls(
            np.asarray(d["mean"], np.float64),
            np.asarray(d["var"], np.float64),
            float(d["clip"]),
            float(d.get("epsilon", 1e-8)),
        )

    @classmethod
    def from_vecnormalize(cls, vec) -> ObsNormalizer:
        rms = vec.obs_rms
        return cls(rms.mean.copy(), rms.var.copy(), float(vec.clip_obs), float(vec.epsilon))


class PPOPolicy:
    """A Stable-Baselines3 PPO model behind the common ``act`` interface. A model
    trained on ``DistinctActions`` outputs an index into ``table``; a model trained on
    the raw ``MultiDiscrete`` space outputs the action itself (``table=None``)."""

    def __init__(self, model, normalizer: ObsNormalizer, table=None, name: str = "ppo") -> None:
        self.model, self.normalizer, self.name = model, normalizer, name
        self.table = None if table is None else np.asarray(table, dtype=np.int64)

    def act(self, observation: np.ndarray) -> np.ndarray:
        action, _ = self.model.predict(self.normalizer(observation), deterministic=True)
        if self.table is not None:
            return self.table[int(action)].copy()
        return np.asarray(action, dtype=np.int64)

    def logits(self, observation: np.ndarray) -> np.ndarray:
        """The network's logits over ``table`` for one raw observation (a model trained
        on ``DistinctActions``): what the exporter's agreement check compares."""
        import torch

        if self.table is None:
            raise ValueError("logits: a model of the raw MultiDiscrete space has one per component")
        obs = torch.as_tensor(self.normalizer(observation)[None])
        with torch.no_grad():
            distribution = self.model.policy.get_distribution(obs).distribution
        return distribution.logits[0].numpy().astype(np.float64)


PROJECT_ROOT = Path(__file__).resolve().parents[1]


def portable_path(path: str | Path) -> str:
    """``path`` relative to the project root when it lies inside it, so that a run
    directory stays valid in another clone of the repository."""
    p = Path(path).resolve()
    return str(p.relative_to(PROJECT_ROOT)) if p.is_relative_to(PROJECT_ROOT) else str(p)


def read_run_config(run_dir: str | Path) -> dict:
    """A run's ``config.json``; ``RunError`` naming the file when it is missing, not
    JSON or not an object."""
    path = Path(run_dir) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path}: missing (not a training run)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(config, dict):
        raise RunError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def run_scenario_path(run_dir: str | Path) -> str | None:
    """The scenario file a run was trained on (``None``: the built-in default)."""
    source = read_run_config(run_dir).get("scenario")
    if source is None or source == "built-in defaults":
        return None
    p = Path(source)
    path = p if p.is_absolute() else PROJECT_ROOT / p
    if not path.is_file():
        raise RunError(
            f"{run_dir} was trained on the scenario {path} (its config.json), which no longer "
            "exists; restore it, or name a scenario with the same model with --scenario"
        )
    return str(path)


MODEL_PAIRS = (("best_model.zip", "best_vecnormalize.json"), ("model.zip", "vecnormalize.json"))


def check_run_dir(run_dir: str | Path, best: bool = True) -> tuple[Path, Path, Path]:
    """The run's (directory, model file, normaliser file): the best model on the
    validation traces when there is one (``best``), else the final one."""
    run = Path(run_dir)
    if run.is_file():
        raise RunError(f"{run}: a file, not a run directory (runs/NAME, as train.py writes)")
    if not run.is_dir():
        raise RunError(f"{run}: run directory not found")
    if not (run / "config.json").is_file():
        raise RunError(f"{run}: config.json is missing (not a training run)")
    read_run_config(run)
    pairs = MODEL_PAIRS if best else MODEL_PAIRS[::-1]
    for model_file, norm_file in pairs:
        if (run / model_file).is_file() and (run / norm_file).is_file():
            return run, run / model_file, run / norm_file
    raise RunError(f"{run}: no model with its normalisation (model.zip + vecnormalize.json)")


def load_ppo(
    run_dir: str | Path,
    nvec=None,
    obs_dim: int | None = None,
    best: bool = True,
    model_hash: str | None = None,
    levels_by_cut=None,
    variants=None,
) -> PPOPolicy:
    """Load a run's best model (or final, ``best=False``) and its normalisation;
    refuses a model whose action or observation space differs from the scenario's, or
    (given ``model_hash``) one trained on a profile of another model, or (given
    ``variants``) on other model variants. ``levels_by_cut``: the levels each cut of the
    scenario offers (default: what the run recorded)."""
    from stable_baselines3 import PPO

    run, model_file, norm_file = check_run_dir(run_dir, best)
    verify(run, run / "config.json", model_file, norm_file)  # before anything is unpickled
    config = read_run_config(run)
    trained_variants = config.get("variants", ["float32"])  # runs before variants existed
    if variants is not None and list(variants) != trained_variants:
        raise RunError(
            f"{run}: trained with model variants {trained_variants} (the action's variant "
            f"index means them in this order), this scenario lists {list(variants)}"
        )
    trained_on = config.get("profile_model_hash")
    if model_hash is not None and trained_on is not None and trained_on != model_hash:
        raise RunError(
            f"{run}: trained on a profile of model {trained_on}, this scenario's profile is of "
            f"model {model_hash}"
        )
    try:
        model = PPO.load(model_file, device="cpu")
    except Exception as exc:  # zip/ValueError/KeyError on a corrupt or foreign file
        raise RunError(f"{model_file}: cannot load PPO model ({exc})") from exc
    table = None
    space = model.action_space
    if hasattr(space, "nvec"):
        got = [int(v) for v in space.nvec]
        if nvec is not None and got != [int(v) for v in nvec]:
            raise RunError(
                f"{model_file}: trained for action space {got}, "
                f"this scenario has {[int(v) for v in nvec]}"
            )
    else:
        config = read_run_config(run)
        trained_nvec = config.get("nvec")
        trained_levels = config.get("levels_by_cut")  # absent: every cut had every level
        want = [int(v) for v in (nvec if nvec is not None else trained_nvec)]
        levels = levels_by_cut if levels_by_cut is not None else trained_levels
        table = distinct_actions(*want, levels_by_cut=levels)
        same_levels = trained_levels is None or levels is None or list(levels) == trained_levels
        if trained_nvec != want or int(space.n) != len(table) or not same_levels:
            raise RunError(
                f"{model_file}: trained for action space {trained_nvec} "
                f"({int(space.n)} distinct actions), this scenario has {want} "
                f"({len(table)} distinct actions)"
            )
    if obs_dim is not None and model.observation_space.shape != (obs_dim,):
        raise RunError(
            f"{model_file}: trained for observations of shape "
            f"{model.observation_space.shape}, this build makes ({obs_dim},)"
        )
    try:
        normalizer = ObsNormalizer.from_json(json.loads(norm_file.read_text()))
    except (KeyError, ValueError, TypeError) as exc:
        raise RunError(f"{norm_file}: not a valid normalisation file ({exc})") from exc
    if normalizer.mean.shape != (model.observation_space.shape[0],):
        raise RunError(
            f"{norm_file}: 'mean' has shape {normalizer.mean.shape}, "
            f"the model takes {model.observation_space.shape}"
        )
    return PPOPolicy(model, normalizer, table)
