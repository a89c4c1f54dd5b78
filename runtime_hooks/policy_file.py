"""A trained policy as one small ``.npz`` file that runs with numpy alone.

The file holds the observation normaliser (VecNormalize's running mean and variance),
the actor's weights (a tanh MLP and a linear head), the table that maps a flat
``Discrete`` choice back to ``(cut, threshold, level)``, and what the policy was trained
for (action grid, thresholds, deadline, the radios' tail parameters), so that a device
refuses a policy made for another scenario. No pickles: ``numpy.load`` runs with
``allow_pickle=False``. The deterministic action is the arg-max of the logits, which is
what Stable-Baselines3's ``predict(deterministic=True)`` returns.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from profiles.profile_io import read_npz
from settings.tables import InputError

FORMAT = "splitctl-policy-v1"
ACTIVATIONS = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0.0)}


class PolicyFileError(InputError):
    """A policy file is missing, malformed, or made for another scenario."""


@dataclass(frozen=True)
class PolicyMeta:
    """What the policy was trained for; checked against the device's scenario."""

    nvec: tuple[int, int, int]
    thresholds: tuple[float, ...]
    deadline_s: float
    keep_alive_s: float
    radios: dict[str, tuple[float, float]]  # name -> (tail_s, tail_w)
    obs_dim: int
    activation: str
    profile_model_hash: str
    source: str

    def to_json(self) -> str:
        d = dict(self.__dict__)
        d["radios"] = {k: list(v) for k, v in self.radios.items()}
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str) -> PolicyMeta:
        try:
            d = json.loads(text)
            return cls(
                nvec=tuple(int(v) for v in d["nvec"]),
                thresholds=tuple(float(v) for v in d["thresholds"]),
                deadline_s=float(d["deadline_s"]),
                keep_alive_s=float(d["keep_alive_s"]),
                radios={k: (float(v[0]), float(v[1])) for k, v in d["radios"].items()},
                obs_dim=int(d["obs_dim"]),
                activation=str(d["activation"]),
                profile_model_hash=str(d["profile_model_hash"]),
                source=str(d.get("source", "")),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise PolicyFileError(f"{where}: field 'meta' is malformed ({exc})") from exc


class NumpyPolicy:
    """``act(observation) -> action`` with numpy only (the common ``Policy`` interface).

    Computes in float32, like the torch network it was exported from, so that the
    arg-max agrees with Stable-Baselines3 on every observation not at a numerical tie.
    """

    def __init__(
        self,
        layers: list[tuple[np.ndarray, np.ndarray]],
        head: tuple[np.ndarray, np.ndarray],
        obs_mean: np.ndarray,
        obs_var: np.ndarray,
        clip: float,
        epsilon: float,
        table: np.ndarray,
        meta: PolicyMeta,
        name: str = "ppo",
    ) -> None:
        self.layers = [(w.astype(np.float32), b.astype(np.float32)) for w, b in layers]
        self.head = (head[0].astype(np.float32), head[1].astype(np.float32))
        self.obs_mean = np.asarray(obs_mean, np.float64)
        # VecNormalize's arithmetic exactly: float64, (obs - mean) / sqrt(var + eps).
        self.obs_var_eps = np.asarray(obs_var, np.float64) + epsilon
        self.obs_std = np.sqrt(self.obs_var_eps)
        self.clip = float(clip)
        self.table = np.asarray(table, np.int64)
        self.meta = meta
        self.name = name
        self._activation = ACTIVATIONS[meta.activation]
        self._actions = [row.copy() for row in self.table]

    def logits(self, observation: np.ndarray) -> np.ndarray:
        z = (np.asarray(observation, np.float64) - self.obs_mean) / self.obs_std
        x = z.clip(-self.clip, self.clip).astype(np.float32)
        act = self._activation
        for w, b in self.layers:
            x = act(w @ x + b)
        w, b = self.head
        return w @ x + b

    def act(self, observation: np.ndarray) -> np.ndarray:
        return self._actions[int(self.logits(observation).argmax())].copy()

    # -- file format -----------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "format": np.array(FORMAT),
            "meta": np.array(self.meta.to_json()),
            "obs_mean": self.obs_mean,
            "obs_var": self.obs_var_eps,  # epsilon folded in: loaded with epsilon 0
            "clip": np.array(self.clip),
            "table": self.table,
            "head_w": self.head[0],
            "head_b": self.head[1],
        }
        for i, (w, b) in enumerate(self.layers):
            arrays[f"layer{i}_w"], arrays[f"layer{i}_b"] = w, b
        with open(path, "wb") as f:
            np.savez(f, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> NumpyPolicy:
        """Load and validate a policy file; errors name the file and the field."""
        path = Path(path)
        data, need = read_npz(path, "policy", PolicyFileError)
        if str(need("format")) != FORMAT:
            raise PolicyFileError(f"{path}: field 'format' is {need('format')!s}, not {FORMAT}")
        meta = PolicyMeta.from_json(str(need("meta")), str(path))
        if meta.activation not in ACTIVATIONS:
            raise PolicyFileError(f"{path}: activation {meta.activation!r} is not supported")
        layers = []
        while f"layer{len(layers)}_w" in data:
            i = len(layers)
            layers.append((need(f"layer{i}_w"), need(f"layer{i}_b")))
        head = (need("head_w"), need("head_b"))
        table = need("table")
        # Shapes chain: obs -> layer0 -> ... -> head -> one logit per table row.
        width = meta.obs_dim
        for i, (w, b) in enumerate([*layers, head]):
            name = f"layer{i}" if i < len(layers) else "head"
            if w.ndim != 2 or w.shape[1] != width or b.shape != (w.shape[0],):
                raise PolicyFileError(
                    f"{path}: field '{name}_w' has shape {w.shape} (bias {b.shape}), "
                    f"expected (*, {width})"
                )
            if not (np.isfinite(w).all() and np.isfinite(b).all()):
                raise PolicyFileError(f"{path}: field '{name}' holds NaN or infinity")
            width = w.shape[0]
        if table.ndim != 2 or table.shape != (width, 3):
            raise PolicyFileError(
                f"{path}: field 'table' has shape {table.shape}, expected ({width}, 3)"
            )
        if ((table < 0) | (table >= np.array(meta.nvec))).any():
            raise PolicyFileError(f"{path}: field 'table' holds an action outside {meta.nvec}")
        mean, var = need("obs_mean"), need("obs_var")
        if mean.shape != (meta.obs_dim,) or var.shape != (meta.obs_dim,) or (var <= 0).any():
            raise PolicyFileError(
                f"{path}: fields 'obs_mean'/'obs_var' do not fit {meta.obs_dim} inputs"
            )
        clip = float(need("clip"))
        if not (math.isfinite(clip) and clip > 0):
            raise PolicyFileError(f"{path}: field 'clip' is {clip}")
        policy = cls(layers, head, mean, var, clip, 0.0, table, meta)
        policy.path = path  # named by the errors of check_compatible
        return policy

    def check_compatible(
        self, nvec, thresholds, obs_dim: int, where: str = "scenario", model_hash: str | None = None
    ) -> None:
        """Refuse to run where the action grid, the observation or (given
        ``model_hash``) the profiled model differs from training."""
        m = self.meta
        name = f"policy {getattr(self, 'path', None) or m.source}"
        fix = "; export one from a run trained on it (python -m runtime_hooks.export RUN --out F)"
        if model_hash is not None and model_hash != m.profile_model_hash:
            raise PolicyFileError(
                f"{name}: trained on a profile of model {m.profile_model_hash}, the {where}'s "
                f"profile is of model {model_hash}{fix}"
            )
        if tuple(int(v) for v in nvec) != m.nvec:
            raise PolicyFileError(
                f"{name}: trained for actions {m.nvec}, the {where} has {tuple(nvec)}{fix}"
            )
        if not np.allclose(thresholds, m.thresholds):
            raise PolicyFileError(
                f"{name}: trained for thresholds {m.thresholds}, the {where} has "
                f"{tuple(thresholds)}{fix}"
            )
        if obs_dim != m.obs_dim:
            raise PolicyFileError(
                f"{name}: takes {m.obs_dim} observations, this build makes {obs_dim}"
            )


def from_sb3(ppo_policy, meta: PolicyMeta) -> NumpyPolicy:
    """Convert an ``agents.ppo.PPOPolicy`` (SB3 ``MlpPolicy`` with a flat ``Discrete``
    head over ``table``, or a ``MultiDiscrete`` one) into a ``NumpyPolicy``."""
    import torch

    policy = ppo_policy.model.policy
    if policy.features_extractor.__class__.__name__ != "FlattenExtractor":
        raise PolicyFileError("only MlpPolicy (FlattenExtractor) networks can be exported")
    layers = []
    for module in policy.mlp_extractor.policy_net:
        if isinstance(module, torch.nn.Linear):
            layers.append((module.weight.detach().numpy(), module.bias.detach().numpy()))
        elif not isinstance(module, (torch.nn.Tanh, torch.nn.ReLU)):
            raise PolicyFileError(f"cannot export a {type(module).__name__} layer")
    head = (policy.action_net.weight.detach().numpy(), policy.action_net.bias.detach().numpy())
    table = ppo_policy.table
    if table is None:
        raise PolicyFileError(
            "a factorised MultiDiscrete head has one arg-max per component; export supports "
            "the flat Discrete head (envs.wrappers.DistinctActions) that train.py uses"
        )
    n = ppo_policy.normalizer
    return NumpyPolicy(layers, head, n.mean, n.var, n.clip, n.epsilon, table, meta)
