"""Warm-starting PPO by imitating a clairvoyant expert (as Comyco does for video
bitrate adaptation: Huang et al., "Comyco: Quality-Aware Adaptive Video Streaming via
Imitation Learning", ACM MM 2019).

The expert sees the simulator: the trace's future bandwidth, the queue, the radio
tail, the battery. Unlike the evaluation oracle it does *not* know how the request's
own image will turn out: it scores each action by its reward averaged over a few
images drawn from the validation split, so what it does can be learnt from the
device's observations. A policy network is fitted to its choices by cross-entropy,
and PPO then improves on that start in the environment itself.
"""

from __future__ import annotations

import numpy as np

from envs.offload_env import OffloadEnv
from envs.wrappers import distinct_actions


class SampleBlindExpert:
    """Per request, the action with the best reward averaged over ``n_images`` images
    (the radio tail amortised to the next arrival, as the oracle does)."""

    name = "expert"
    privileged = True

    def __init__(self, n_images: int = 3, seed: int = 0) -> None:
        self.n_images = n_images
        self.rng = np.random.default_rng(seed)
        self.table: list[tuple[int, int, int]] | None = None

    def scores(self, env: OffloadEnv) -> np.ndarray:
        if self.table is None:
            self.table = distinct_actions(*env.action_space.nvec)
        st, s = env.state, env.system
        nxt = st.arrivals[st.index + 1] if st.index + 1 < len(st.arrivals) else np.inf
        battery = max(st.battery_j, 0.0) / s.battery_capacity_j
        own = st.samples[st.index]
        images = self.rng.integers(s.n_samples, size=self.n_images)
        total = np.zeros(len(self.table))
        try:
            for image in images:
                st.samples[st.index] = int(image)
                for j, a in enumerate(self.table):
                    out = env.simulate(*a)
                    if out.offloaded:
                        burned = st.radio.tail_w * min(max(nxt - out.tx_end_s, 0.0), st.radio.tail_s)
                        energy = out.energy_j - out.tail_j + burned
                        total[j] += s.reward(out.correct, out.latency_s, energy, out.money_usd,
                                             out.leakage, battery)  # fmt: skip
                    else:
                        total[j] += out.reward
        finally:
            st.samples[st.index] = own
        return total / self.n_images

    def act_privileged(self, env: OffloadEnv) -> np.ndarray:
        return np.array(self.table_action(int(np.argmax(self.scores(env)))), dtype=np.int64)

    def table_action(self, index: int) -> tuple[int, int, int]:
        return self.table[index]


def collect(env: OffloadEnv, expert: SampleBlindExpert, steps: int, seed: int, progress=None):
    """Roll the expert through the environment; returns (observations, action indices)."""
    obs_list, act_list = [], []
    obs, _ = env.reset(seed=seed)
    bar = progress(range(steps)) if progress else range(steps)
    for _ in bar:
        index = int(np.argmax(expert.scores(env)))
        obs_list.append(obs)
        act_list.append(index)
        obs, _, terminated, truncated, _ = env.step(expert.table[index])
        if terminated or truncated:
            obs, _ = env.reset()
    return np.asarray(obs_list, np.float32), np.asarray(act_list, np.int64)


def pretrain(model, normalized_obs: np.ndarray, actions: np.ndarray, epochs: int,
             batch_size: int = 512, lr: float = 1e-3, seed: int = 0) -> list[float]:  # fmt: skip
    """Fit an SB3 policy's action distribution to the expert's actions (cross-entropy).
    Returns the mean loss of each epoch."""
    import torch

    policy = model.policy
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    x = torch.as_tensor(normalized_obs)
    y = torch.as_tensor(actions)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    policy.set_training_mode(True)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        epoch_loss = []
        for start in range(0, len(y), batch_size):
            idx = order[start : start + batch_size]
            dist = policy.get_distribution(x[idx])
            loss = -dist.log_prob(y[idx]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            epoch_loss.append(float(loss))
        losses.append(float(np.mean(epoch_loss)))
    policy.set_training_mode(False)
    return losses
