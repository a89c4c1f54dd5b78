"""Potential-based reward shaping for training: investments that pay off over many requests.

On a cellular radio the first upload after an idle spell pays the whole high-power
tail (LTE: ~12 J), and uploads inside a running tail pay only its extension; on a FaaS
cloud the first request after the keep-alive window pays a cold start. A learner that
discounts with gamma = 0.9 sees about ten requests ahead, fewer than the requests that
share one tail, so starting to offload looks like a loss.

Both wrappers add ``discount * phi(s') - phi(s)`` to each reward, with ``phi`` a
potential of the state at the decision time and ``phi = 0`` at the end of an episode:

* ``TailPotential`` (``discount = gamma``): ``phi`` is the weighted energy of the tail
  still to run. With the learner's own gamma, shaping leaves the optimal policy of the
  discounted problem unchanged (Ng, Harada and Russell, ICML 1999); it only moves credit
  to where the tail is used.
* ``RegimePotential`` (``discount = 1``): ``phi`` is what being in an offloading regime
  is worth, the weighted energy of a whole tail while the radio is up plus the reward
  cost of a cold start while the cloud is warm. With ``discount = 1`` the shaped rewards
  of an episode sum to the true ones (the sum telescopes from ``phi = 0`` at a cold,
  idle start to ``phi = 0`` at the end), so the undiscounted objective that evaluation
  measures keeps its optimum; what changes is where the short-sighted learner sees the
  costs: a tail start is charged when the tail finally runs out, and a cold start at the
  end of the episode, instead of up front on the request that opened the regime.

Evaluation always uses the environment's own reward.
"""

from __future__ import annotations

import gymnasium as gym

from sim import physics


class _Potential(gym.Wrapper):
    """Adds ``discount * phi(s') - phi(s)`` to the reward; ``info["unshaped_reward"]``
    keeps the environment's own."""

    def __init__(self, env: gym.Env, discount: float) -> None:
        super().__init__(env)
        if not 0.0 < discount <= 1.0:
            raise ValueError(f"shaping discount must be in (0, 1], got {discount}")
        self.discount = discount
        self._phi = 0.0

    def potential(self) -> float:
        raise NotImplementedError

    def _energy_value(self, joules: float) -> float:
        """The reward's energy term alone for ``joules`` at the current battery level."""
        env = self.env.unwrapped
        level = physics.battery_level(env.system, env.state.battery_j)
        carbon = physics.device_carbon_g(env.system, joules)
        return -env.system.reward.energy_only(joules, level, carbon)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._phi = self.potential()
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        phi = 0.0 if (terminated or truncated) else self.potential()
        info["unshaped_reward"] = reward
        shaped = reward + self.discount * phi - self._phi
        self._phi = phi
        return obs, shaped, terminated, truncated, info


class TailPotential(_Potential):
    """``phi``: the weighted energy of the radio tail still to run at the decision time;
    ``discount`` is the learner's gamma (see the module docstring)."""

    def potential(self) -> float:
        env = self.env.unwrapped
        st = env.state
        if st is None or st.index >= len(st.arrivals):
            return 0.0
        tail_j = physics.radio_tail_left_j(st.radio, env.decision_time(), st.radio_tail_end_s)
        return self._energy_value(tail_j) if tail_j > 0.0 else 0.0


class RegimePotential(_Potential):
    """``phi``: ``tail_share`` of a whole tail's weighted energy while the radio's tail
    runs, plus the reward cost of a cold start while a FaaS cloud is warm;
    ``discount = 1`` (see the module docstring).

    ``tail_share`` < 1 leaves part of a tail start charged up front. The deferred part
    is seen by a learner with discount gamma about gamma**(tail / request gap) later,
    and staying in a regime postpones it, so at a low battery, where a regime should end,
    a full deferral makes continuing look cheaper than it is."""

    def __init__(self, env: gym.Env, tail_share: float = 1.0) -> None:
        super().__init__(env, 1.0)
        if not 0.0 <= tail_share <= 1.0:
            raise ValueError(f"tail_share must be in [0, 1], got {tail_share}")
        self.tail_share = tail_share
        s = env.unwrapped.system
        w, deadline = s.scenario.reward, s.scenario.workload.deadline_s
        cold_s = s.cloud.cold_start_s if s.may_go_cold else 0.0
        ratio = min(cold_s / deadline, 4.0)
        # A cold start's own cost in the reward: its latency term plus a deadline miss.
        self.cold_value = w.latency * ratio + (w.deadline_miss if cold_s > deadline else 0.0)

    def potential(self) -> float:
        env = self.env.unwrapped
        st, s = env.state, env.system
        if st is None or st.index >= len(st.arrivals):
            return 0.0
        now = env.decision_time()
        phi = 0.0
        if physics.radio_tail_left_j(st.radio, now, st.radio_tail_end_s) > 0.0:
            phi += self.tail_share * self._energy_value(st.radio.tail_w * st.radio.tail_s)
        if s.may_go_cold and now - st.cloud_last_use_s <= s.cloud.keep_alive_s:
            phi += self.cold_value
        return phi
