"""``OffloadFleet-v0``: N devices sharing one cloud, stepped together in numpy.

    envs = gymnasium.make_vec("OffloadFleet-v0", num_envs=64, scenario="fleet.toml")

Each sub-environment is one device of the fleet with its own trace, battery, arrivals
and samples, exactly as ``OffloadEnv`` simulates one device: both step their devices
through ``sim.kernel`` (with N = 1 and an unlimited cloud the two give the same
floats). What couples the devices is the cloud: every step, the requests the devices
offload reach the shared serving tier (``sim.cloud``) in order of their arrival there,
and wait for a worker (IaaS) or an instance (FaaS) when it is full. With ``cloud =
"private"`` each device has the cloud to itself instead (N independent copies of
``Offload-v0``, stepped as one batch: what training a single-device policy needs).

## Action space
``MultiDiscrete([[K+1, T, L]] * N)``: one ``OffloadEnv`` action per device (with a
fourth component, the model variant, where the scenario offers several).

## Observation space
``Box(-10, 10, (N, 18), float32)``: each device's ``OffloadEnv`` observation (17
features, ``telemetry.observation.OBS_NAMES``) and what its own answers told it about
the cloud: the server-side queueing time they reported (the answer frame carries it),
smoothed, over the deadline (``server_queue_over_deadline``). A policy trained on one
device reads the first 17.

## Rewards, episode end
Per device, as ``OffloadEnv``: a request's reward; truncated after the scenario's
``episode_requests``; terminated when the battery is empty. The fleet shares one
clock, so a device whose episode ends starts its next one where it is in time (a new
trace, battery and requests), the others going on (``AutoresetMode.SAME_STEP``: the
step that ends an episode returns the next one's first observation, the last one in
``info["final_obs"]``).

## Reset options
As ``OffloadEnv.reset``'s, for every device; ``telemetry_by_device`` (a list, one
``Telemetry`` per device) gives each device its own starting telemetry (what a real
device measured before its episode, for sim-to-real).

## A note on time
A step takes each device's next request. Devices drift apart by their arrival noise
(a few seconds over an episode at the default rate); the cloud serves each step's
requests in order of arrival, after the previous step's. Probes (``[probe]``) are not
simulated in a fleet yet: a fleet scenario must keep ``probe.interval_s = 0``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv

from envs.offload_env import EpisodeState, OffloadEnv
from sim import kernel as K
from sim.capacity import Capacity
from sim.cloud import SharedCloud, batch_seconds
from sim.devices import Devices
from sim.scenario import Scenario, ScenarioError, load_scenario
from telemetry.observation import OBS_HIGH, OBS_LOW

__all__ = ["FLEET_OBS_DIM", "OffloadFleetEnv", "make_fleet"]

FLEET_OBS_DIM = K.OBS_COLUMNS
CLOUDS = ("shared", "private")
INFO_COLUMNS = {
    "latency_s": K.O_LATENCY,
    "device_s": K.O_DEVICE,
    "network_s": K.O_NETWORK,
    "cloud_s": K.O_CLOUD,
    "queue_s": K.O_QUEUE,
    "energy_j": K.O_ENERGY,
    "money_usd": K.O_MONEY,
    "carbon_g": K.O_CARBON,
    "leakage": K.O_LEAKAGE,
    "accuracy_expected": K.O_EXPECTED,
}
INFO_FLAGS = {
    "offloaded": K.O_OFFLOADED,
    "correct": K.O_CORRECT,
    "deadline_miss": K.O_MISS,
    "cold_start": K.O_COLD,
}


class OffloadFleetEnv(VectorEnv):
    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 8,
        scenario: Scenario | str | None = None,
        traces=None,
        *,
        trace_source: str = "auto",
        trace_split: str | None = "train",
        sample_split: str | None = None,
        episode_requests: int | None = None,
        accuracy_credit: str = "realized",
        capacity: Capacity | None = None,
        cloud: str = "shared",
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"a fleet needs at least one device: num_envs={num_envs!r}")
        if cloud not in CLOUDS:
            raise ValueError(f"cloud must be one of {', '.join(CLOUDS)}, got {cloud!r}")
        if not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario)
        if scenario.probe.interval_s > 0 and cloud == "shared":
            raise ScenarioError(
                f"scenario {scenario.name!r}: background probes ([probe] interval_s = "
                f"{scenario.probe.interval_s}) are not simulated in a shared-cloud fleet; "
                "set it to 0"
            )
        # One device's environment holds the system, the traces and the draws; the fleet
        # replays its reset for each device and steps all of them in arrays.
        self.single = OffloadEnv(
            scenario,
            traces,
            trace_source=trace_source,
            trace_split=trace_split,
            sample_split=sample_split,
            episode_requests=episode_requests,
            accuracy_credit=accuracy_credit,
        )
        self.scenario = scenario = self.single.scenario
        s = self.system = self.single.system
        self.capacity = capacity if capacity is not None else scenario.capacity
        self.cloud = None
        if cloud == "shared":
            # Workers batch by the measured times; with no worker limit, batch 1 is the
            # single-device env's tail time (``SharedCloud``'s default). A hybrid's VM
            # serves each request alone (``SharedCloud.serve_hybrid``): no batch table.
            batches = self.capacity.workers and s.hybrid is None
            table = batch_seconds(s, self.capacity) if batches else None
            self.cloud = SharedCloud(s, self.capacity, table)
        self.num_envs = n = num_envs
        self.single_action_space = self.single.action_space
        self.single_observation_space = spaces.Box(OBS_LOW, OBS_HIGH, (FLEET_OBS_DIM,), np.float32)
        self.action_space = spaces.MultiDiscrete(np.tile(self.single_action_space.nvec, (n, 1)))
        self.observation_space = spaces.Box(OBS_LOW, OBS_HIGH, (n, FLEET_OBS_DIM), np.float32)
        self.requests_per_episode = scenario.workload.episode_requests
        # The same trace rows as the single device's, so its draws carry over.
        self.devices = Devices(s, self.single.bank, n, self.requests_per_episode, self.cloud)
        self.families = [""] * n
        self.radios: list = [None] * n
        self._state_ready = False

    # -- reset ---------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None or self.single._np_random is None:
            # The generator every device draws from, in turn (as N = 1 would in
            # ``OffloadEnv``: the same seed gives that env's episode).
            self.single._np_random, _ = seeding.np_random(seed)
        if self.cloud is not None:
            self.cloud.reset()
        self._state_ready = True
        for d in range(self.num_envs):
            self._reset_device(d, 0.0, options)
        return self.devices.observe().copy(), {"family": np.array(self.families)}

    def _reset_device(self, d: int, start_s: float, options=None) -> None:
        """Device ``d`` starts an episode at fleet time ``start_s``: the draws of
        ``OffloadEnv.reset`` (trace, offset, arrivals, samples, battery), in its order."""
        env = self.single
        options = dict(options or {})
        by_device = options.pop("telemetry_by_device", None)
        if by_device is not None:  # what each real device measured before its episode
            options["telemetry"] = by_device[d]
        env.reset(options=options)  # draws from the shared generator, as one env would
        st = env.state
        row = env.row_of(st.trace)
        if row is None:  # a trace pinned through options must be one of the pool's
            raise ValueError(
                f"trace {st.trace.family}/{st.trace.name} is not in the fleet's trace pool"
            )
        tel = env.telemetry
        self.devices.load(
            d,
            row=row,
            radio=st.radio,
            context=st.context,
            offset_s=st.offset_s,
            arrivals=st.arrivals,
            samples=st.samples,
            battery_j=st.battery_j,
            telemetry=tel,
            start_s=start_s,
        )
        self.families[d] = st.trace.family
        self.radios[d] = st.radio

    def device_state(self, d: int) -> EpisodeState:
        """Device ``d``'s episode (a copy, times on the fleet's clock: its trace is
        read at ``offset_s`` + fleet time)."""
        dev = self.devices
        fs, ints = dev.fs[d], dev.ints[d]
        radio = self.radios[d]
        return EpisodeState(
            trace=self.single.bank.traces[ints[K.I_ROW]], radio=radio,
            offset_s=float(fs[K.D_OFFSET]), arrivals=dev.arrivals[d].tolist(),
            samples=dev.samples[d].astype(int).tolist(), battery_j=float(fs[K.D_BATTERY]),
            context=self.system.observation_context(radio), index=int(ints[K.I_INDEX]),
            free_s=float(fs[K.D_FREE]), radio_tail_end_s=float(fs[K.D_TAIL_END]),
            cloud_last_use_s=float(fs[K.D_CLOUD_LAST]),
        )  # fmt: skip

    # -- step -------------------------------------------------------------------------------
    def check_actions(self, actions) -> np.ndarray:
        """``(N, 3)`` integer actions (``(N, 4)`` where the scenario offers model
        variants), each within the single action space (a level beyond a cut's own
        means its last, as in ``OffloadEnv.check_action``)."""
        a = np.asarray(actions)
        width = len(self.single_action_space.nvec)
        widths = sorted({3, width})  # three components run the scenario's first variant
        if (
            a.ndim != 2
            or a.shape[0] != self.num_envs
            or a.shape[1] not in widths
            or (a.dtype.kind not in "iu")
        ):
            shapes = " or ".join(f"({self.num_envs}, {w})" for w in widths)
            raise ValueError(f"actions must be integers of shape {shapes}, got {a.dtype} {a.shape}")
        return self.devices.checked(a, self.single_action_space.nvec)

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.advance(actions)
        out = self.devices.out
        info.update({key: out[:, col].copy() for key, col in INFO_COLUMNS.items()})
        info.update({key: out[:, col] > 0.0 for key, col in INFO_FLAGS.items()})
        info["sent_bytes"] = out[:, K.O_SENT].astype(np.int64)
        info["exit_block"] = out[:, K.O_EXIT_BLOCK].astype(np.int64)
        info["cut"] = out[:, K.O_CUT].astype(np.int64)
        info["variant"] = out[:, K.O_VARIANT].astype(np.int64)
        return obs, reward, terminated, truncated, info

    def advance(self, actions, checked: bool = False):
        """``step`` without the per-request metrics: ``(obs, reward, terminated,
        truncated, info)``, ``info`` holding only the episode ends (``final_obs``), for
        learners that read the reward alone. The metrics stay in ``devices.out``.
        ``checked``: ``actions`` are already valid int64 actions, each level within its
        cut's (as ``envs.wrappers.env_actions`` lists them)."""
        if not self._state_ready:
            raise RuntimeError("call reset() before step()")
        out, obs = self.devices.step(actions if checked else self.check_actions(actions))
        reward = out[:, K.O_REWARD].copy()
        terminated, truncated = out[:, K.O_TERMINATED] > 0.0, out[:, K.O_TRUNCATED] > 0.0
        info: dict = {}
        obs = self._autoreset(obs.copy(), out[:, K.O_NEXT], terminated | truncated, info)
        return obs, reward, terminated, truncated, info

    def _autoreset(self, obs: np.ndarray, nxt: np.ndarray, ended: np.ndarray, info: dict):
        """Devices whose episode ended (observed after their last request in ``obs``)
        start the next one where they are in time (``final_obs`` in ``info``)."""
        if self.cloud is not None:
            self.cloud.prune(float(nxt.min()))  # no request reaches the cloud before then
        if ended.any():
            info["final_obs"] = np.where(ended[:, None], obs, 0.0).astype(np.float32)
            info["_final_obs"] = ended.copy()
            info["final_info"] = {"family": np.array(self.families)}
            for d in np.flatnonzero(ended).tolist():
                self._reset_device(d, float(nxt[d]))
            obs = np.where(ended[:, None], self.devices.observe(), obs)
        return obs

    def close_extras(self, **kwargs: Any) -> None:
        self.single.close()


def make_fleet(num_envs: int = 8, **kwargs) -> OffloadFleetEnv:
    """``gymnasium.make_vec``'s vector entry point for ``OffloadFleet-v0``."""
    return OffloadFleetEnv(num_envs, **kwargs)
