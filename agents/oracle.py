"""A clairvoyant per-request oracle.

For every request it simulates every distinct action with the simulator's own state:
the future bandwidth of the trace, the drawn sample's true exit confidences and
correctness, the queue, the radio tail, the cloud's warmth. It takes the action with
the best immediate reward.

What it bounds: no policy can get a better reward *for a request, given the state it
arrives in*. What it does not bound: it is greedy. It ignores what an action does to
later requests (a long transfer delays the queue, an upload keeps the radio tail alive
or a FaaS instance warm for the next ones, energy spent now weights later energy
more), so a policy that plans ahead can beat it on some episodes; it is an upper
reference, not a proof of optimality.
"""

from __future__ import annotations

import numpy as np

from envs.offload_env import OffloadEnv
from envs.sweep import distinct_actions


class Oracle:
    name = "oracle"
    privileged = True

    def __init__(self) -> None:
        self._actions: list[tuple[int, int, int]] | None = None

    def act_privileged(self, env: OffloadEnv) -> np.ndarray:
        if self._actions is None:
            self._actions = distinct_actions(*env.action_space.nvec)
        best, best_r = None, -np.inf
        for a in self._actions:
            r = env.simulate(*a).reward
            if r > best_r:
                best, best_r = a, r
        return np.array(best, dtype=np.int64)

    def act(self, observation: np.ndarray) -> np.ndarray:
        raise RuntimeError("the oracle needs the simulator: call act_privileged(env)")
