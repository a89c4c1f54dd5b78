"""PPO policies: a trained run directory as a ``Policy``, with its normalisation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RUN_FILES = ("model.zip", "vecnormalize.json", "config.json")


class RunError(ValueError):
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
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "clip": self.clip,
                "epsilon": self.epsilon}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict) -> ObsNormalizer:
        return cls(np.asarray(d["mean"], np.float64), np.asarray(d["var"], np.float64),
                   float(d["clip"]), float(d.get("epsilon", 1e-8)))  # fmt: skip

    @classmethod
    def from_vecnormalize(cls, vec) -> ObsNormalizer:
        rms = vec.obs_rms
        return cls(rms.mean.copy(), rms.var.copy(), float(vec.clip_obs), float(vec.epsilon))


class PPOPolicy:
    """A Stable-Baselines3 PPO model behind the common ``act`` interface."""

    def __init__(self, model, normalizer: ObsNormalizer, name: str = "ppo") -> None:
        self.model, self.normalizer, self.name = model, normalizer, name

    def act(self, observation: np.ndarray) -> np.ndarray:
        action, _ = self.model.predict(self.normalizer(observation), deterministic=True)
        return np.asarray(action, dtype=np.int64)


def check_run_dir(run_dir: str | Path, model_file: str = "model.zip") -> Path:
    run = Path(run_dir)
    if not run.is_dir():
        raise RunError(f"{run}: run directory not found")
    for name in (model_file, "vecnormalize.json", "config.json"):
        if not (run / name).is_file():
            raise RunError(f"{run}: {name} is missing (not a complete training run)")
    return run


def load_ppo(run_dir: str | Path, nvec=None, obs_dim: int | None = None,
             best: bool = True) -> PPOPolicy:  # fmt: skip
    """Load a run's best model (or final, ``best=False``) and its normalisation;
    refuses a model whose action or observation space differs from the scenario's."""
    from stable_baselines3 import PPO

    run = Path(run_dir)
    model_file = "best_model.zip" if best and (run / "best_model.zip").is_file() else "model.zip"
    run = check_run_dir(run, model_file)
    norm_file = "best_vecnormalize.json" if model_file == "best_model.zip" else "vecnormalize.json"
    if not (run / norm_file).is_file():
        norm_file = "vecnormalize.json"
    try:
        model = PPO.load(run / model_file, device="cpu")
    except Exception as exc:  # zip/ValueError/KeyError on a corrupt or foreign file
        raise RunError(f"{run / model_file}: cannot load PPO model ({exc})") from exc
    if nvec is not None:
        got = list(getattr(model.action_space, "nvec", []))
        if got != list(nvec):
            raise RunError(
                f"{run / model_file}: trained for action space {got}, "
                f"this scenario has {list(nvec)}"
            )
    if obs_dim is not None and model.observation_space.shape != (obs_dim,):
        raise RunError(
            f"{run / model_file}: trained for observations of shape "
            f"{model.observation_space.shape}, this build makes ({obs_dim},)"
        )
    normalizer = ObsNormalizer.from_json(json.loads((run / norm_file).read_text()))
    return PPOPolicy(model, normalizer)
