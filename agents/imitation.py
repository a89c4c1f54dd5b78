"""Imitation warm start: the PPO actor first learns to copy an expert.

The expert is the clairvoyant oracle or a realizable rule (``best_fixed_by_context``:
the best fixed action per radio and battery band on the training traces).

The oracle (``agents.oracle``) chooses with privileged knowledge: the future bandwidth
and the drawn sample's true outcomes. A policy that sees only the device's
observation cannot copy it exactly, but cross-entropy on (observation, oracle action)
pairs teaches it the oracle's most likely choice in each observed situation (for
example: offload when the recent uploads were fast and the battery is full), which
is a far better starting point than a uniform policy over 152 actions, most of which
miss the deadline. PPO then fine-tunes on the true reward (expert-initialised
reinforcement learning, as in AlphaGo's supervised start or DQfD's demonstrations).

Only the actor is pretrained; the critic learns from PPO's first rollouts.
"""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.running_mean_std import RunningMeanStd
from tqdm import tqdm

from agents.oracle import Oracle
from envs.offload_env import OffloadEnv
from envs.wrappers import env_actions


class FrozenRunningMeanStd(RunningMeanStd):
    """Observation statistics for ``VecNormalize`` that training does not update: the
    copied actor was fitted on observations normalised with them, and the states PPO
    explores would otherwise shift its inputs under it."""

    def update(self, arr: np.ndarray) -> None:
        pass

    @classmethod
    def of(cls, observations: np.ndarray) -> FrozenRunningMeanStd:
        rms = cls(shape=observations.shape[1:])
        rms.mean = observations.mean(0).astype(np.float64)
        rms.var = observations.var(0).astype(np.float64) + 1e-8
        rms.count = float(len(observations))
        return rms


def collect_oracle(env: OffloadEnv, steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Demonstrations of the clairvoyant oracle (see ``collect_demonstrations``)."""
    return collect_demonstrations(env, Oracle(), steps, seed)


def collect_demonstrations(
    env: OffloadEnv, expert, steps: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``steps`` (observation, index into ``distinct_actions``) pairs from episodes the
    expert plays, so the observations are those of the states it visits. ``expert`` is
    any ``agents`` policy; a privileged one is handed the simulator."""
    table = {a: i for i, a in enumerate(env_actions(env))}
    privileged = getattr(expert, "privileged", False)
    rng = np.random.default_rng(seed)
    obs_out = np.empty((steps, env.observation_space.shape[0]), np.float32)
    act_out = np.empty(steps, np.int64)
    obs, _ = env.reset(seed=int(rng.integers(2**31)))
    for i in tqdm(range(steps), desc="demonstrations", unit="step", mininterval=2.0):
        action = expert.act_privileged(env) if privileged else expert.act(obs)
        obs_out[i] = obs
        act_out[i] = table[tuple(int(v) for v in action)]
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
    return obs_out, act_out


def pretrain_actor(
    model, observations: np.ndarray, actions: np.ndarray, epochs: int = 10,
    batch_size: int = 512, learning_rate: float = 1e-3, seed: int = 0,
) -> float:  # fmt: skip
    """Cross-entropy of the SB3 actor's logits against the expert's actions, on
    already-normalised observations. Returns the final training accuracy."""
    import torch

    policy = model.policy
    params = list(policy.mlp_extractor.policy_net.parameters()) + list(
        policy.action_net.parameters()
    )
    optimiser = torch.optim.Adam(params, lr=learning_rate)
    x = torch.as_tensor(observations, dtype=torch.float32)
    y = torch.as_tensor(actions, dtype=torch.int64)
    gen = torch.Generator().manual_seed(seed)

    def logits(batch: torch.Tensor) -> torch.Tensor:
        features = policy.extract_features(batch, policy.pi_features_extractor)
        return policy.action_net(policy.mlp_extractor.forward_actor(features))

    policy.set_training_mode(True)
    for _ in tqdm(range(epochs), desc="imitation epochs", unit="epoch"):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            loss = torch.nn.functional.cross_entropy(logits(x[idx]), y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    policy.set_training_mode(False)
    with torch.no_grad():
        return float((logits(x).argmax(1) == y).float().mean())
