"""Potential-based reward shaping for training: the radio tail as stored value.

On a cellular radio the first upload after an idle spell pays the whole high-power
tail (LTE: ~12 J), and uploads inside a running tail pay only its extension. A learner
that discounts with gamma = 0.9 sees about ten requests ahead, fewer than the requests
that share one tail, so starting to offload looks like a loss. ``TailPotential`` adds
``gamma * phi(s') - phi(s)`` to each reward, with ``phi`` the energy cost, at the
reward's own weight for the current battery level, of the tail still to run at the
decision time: the upload that starts a tail gets most of it back at once, and the
tail is then charged step by step while it runs. Potential-based shaping (Ng, Harada
and Russell, ICML 1999) leaves the optimal policy unchanged; ``phi`` is 0 at the end
of an episode. Evaluation always uses the environment's own reward.
"""

from __future__ import annotations

import gymnasium as gym


class TailPotential(gym.Wrapper):
    """Adds ``gamma * phi(s') - phi(s)`` to the reward (see the module docstring);
    ``info["unshaped_reward"]`` keeps the environment's own."""

    def __init__(self, env: gym.Env, gamma: float) -> None:
        super().__init__(env)
        self.gamma = gamma
        self._phi = 0.0

    def potential(self) -> float:
        env = self.env.unwrapped
        st, s = env.state, env.system
        if st is None or st.index >= len(st.arrivals):
            return 0.0
        tail_j = st.radio.tail_left_j(env.decision_time(), st.radio_tail_end_s)
        if tail_j <= 0.0:
            return 0.0
        battery = max(st.battery_j, 0.0) / s.battery_capacity_j
        # The reward's energy term alone (no accuracy, latency, money or leakage).
        return -s.reward(0.0, 0.0, tail_j, 0.0, 0.0, battery)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._phi = self.potential()
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        phi = 0.0 if (terminated or truncated) else self.potential()
        info["unshaped_reward"] = reward
        shaped = reward + self.gamma * phi - self._phi
        self._phi = phi
        return obs, shaped, terminated, truncated, info
