"""The shared cloud, the trace bank and ``OffloadFleet-v0``."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers OffloadFleet-v0)
from envs.fleet_env import FLEET_OBS_DIM, OffloadFleetEnv
from envs.offload_env import OffloadEnv
from sim.capacity import Capacity
from sim.cloud import SharedCloud
from sim.scenario import ScenarioError, load_scenario
from traces.trace import Trace


@pytest.fixture(scope="module")
def traces():
    from traces.sets import load_families

    families = load_families("auto", split="test")[0]
    return [t for fam in sorted(families) for t in families[fam][:3]]


class _System:
    """What ``SharedCloud`` reads of a ``System``: enough to check the queue by hand."""

    def __init__(self, faas: bool, tail=(0.010, 0.006), cold=0.8, keep_alive=360.0):
        from types import SimpleNamespace

        self.is_faas = faas
        self.cloud = SimpleNamespace(cold_start_s=cold, keep_alive_s=keep_alive)
        self.cloud_tail_s = list(tail)


# -- the traces as the kernel reads them ---------------------------------------------------
def test_the_kernels_trace_rows_answer_as_each_trace_does(traces):
    from sim import kernel as K
    from sim.devices import TraceArrays

    pool = [*traces, Trace("outage", "x", (0.0, 1.0, 2.0), (8e3, 0.0, 16e3), 3.0, 0.05)]
    bank = TraceArrays(pool)
    rng = np.random.default_rng(0)
    rows = rng.integers(len(pool), size=5000)
    duration = bank.tr[K.R_META, :, K.M_DURATION]
    t = rng.uniform(0, 3 * duration[rows])
    nbytes = rng.choice([0.0, 1.0, 82.0, 383.0, 1500.0, 2e4, 1e6], size=5000)

    def row(r):
        tr = bank.tr
        return (tr[K.R_STARTS, r], tr[K.R_CUM, r], tr[K.R_RATES, r],
                int(tr[K.R_META, r, K.M_SEGMENTS]))  # fmt: skip

    got = [
        K.finish_time(*row(r), duration[r], a, b) for r, a, b in zip(rows, t, nbytes, strict=True)
    ]
    want = [pool[r].finish_time(a, b) for r, a, b in zip(rows, t, nbytes, strict=True)]
    np.testing.assert_array_equal(got, want)
    for r, a in zip(rows[:500], t[:500], strict=True):
        s, _, rt, n = row(r)
        assert K.rate_at(s, rt, n, duration[r], a) == pool[r].rate_at(a)
    # An upload started in the outage waits for the link to return.
    assert K.finish_time(*row(len(pool) - 1), 3.0, 1.5, 1000.0) > 2


# -- the shared cloud ----------------------------------------------------------------------
def test_iaas_workers_queue_and_batch_by_hand():
    # 1 worker; a batch of b at cut 0 takes 10 ms + 2 ms per extra request.
    table = np.array([[0.0] + [0.010 + 0.002 * (b - 1) for b in range(1, 5)]] * 2)
    cloud = SharedCloud(_System(False), Capacity(workers=1, max_batch=3), table)
    assert cloud.serve(0.000, 0) == (0.0, 0.010, False)  # idle: at once, alone
    q1, s1, _ = cloud.serve(0.001, 0)  # busy until 0.010: waits, opens the next batch
    q2, s2, _ = cloud.serve(0.002, 0)  # joins it
    assert q1 == pytest.approx(0.009) and s1 == pytest.approx(0.010)
    assert q2 == pytest.approx(0.008) and s2 == pytest.approx(0.012)
    cloud.serve(0.003, 0)  # the batch is full (3)...
    q4, _, _ = cloud.serve(0.004, 0)  # ...so this one waits for the one after
    assert q4 == pytest.approx(0.010 + 0.014 - 0.004)
    # Two workers serve two requests at once.
    two = SharedCloud(_System(False), Capacity(workers=2, max_batch=3), table)
    assert two.serve(0.0, 0)[0] == 0.0 and two.serve(0.0, 1)[0] == 0.0
    assert two.serve(0.0, 0)[0] > 0.0


def test_faas_cold_starts_keep_alive_and_throttling():
    cloud = SharedCloud(_System(True), Capacity(concurrency=1, throttle_retry_s=0.1))
    q, s, cold = cloud.serve(0.0, 0)
    assert (q, cold) == (0.0, True) and s == pytest.approx(0.810)
    q, s, cold = cloud.serve(1.0, 0)  # idle and warm
    assert (q, cold) == (0.0, False) and s == pytest.approx(0.010)
    q, _, _ = cloud.serve(1.005, 0)  # the one instance is busy until 1.010: throttled
    assert q == pytest.approx(0.1)  # retried once, 100 ms later
    _, _, cold = cloud.serve(1000.0, 0)  # keep-alive ran out
    assert cold
    free = SharedCloud(_System(True), Capacity())  # no limit: a second instance, cold
    free.serve(0.0, 0)
    assert free.serve(0.001, 0)[2] and free.serve(5.0, 0)[2] is False


def test_capacity_is_checked_by_name():
    with pytest.raises(ScenarioError, match="workers"):
        Capacity(workers=-1)
    with pytest.raises(ScenarioError, match="max_batch"):
        Capacity(max_batch=0)


def test_a_capacity_table_in_a_scenario_file(tmp_path):
    text = (load_scenario.__globals__["DEFAULT_SCENARIO"]).read_text()
    good = tmp_path / "fleet.toml"
    iaas = text.replace('cloud = "faas"', 'cloud = "iaas"')  # workers size a VM's queue
    good.write_text(iaas + "\n[capacity]\nworkers = 2\nmax_batch = 4\n")
    assert load_scenario(good).capacity == Capacity(workers=2, max_batch=4)
    bad = tmp_path / "bad.toml"
    bad.write_text(text + "\n[capacity]\nworker = 2\n")
    with pytest.raises(ScenarioError, match="did you mean 'workers'"):
        load_scenario(bad)


# -- the fleet ---------------------------------------------------------------------------
@pytest.mark.parametrize("cloud", ["faas", "iaas"])
def test_one_device_fleet_is_the_single_device_env(traces, cloud):
    scenario = load_scenario(None).with_updates(cloud=cloud)
    single = OffloadEnv(scenario, traces, sample_split="test")
    fleet = OffloadFleetEnv(1, scenario, traces, sample_split="test")
    rng = np.random.default_rng(1)
    nvec = single.action_space.nvec
    for seed in (0, 1):
        o1, _ = single.reset(seed=seed)
        o2, _ = fleet.reset(seed=seed)
        np.testing.assert_allclose(o1, o2[0, :17], atol=1e-6)
        for _ in range(400):
            action = rng.integers(nvec)
            o1, r1, te1, tr1, i1 = single.step(action)
            o2, r2, te2, tr2, i2 = fleet.step(action[None])
            assert r2[0] == pytest.approx(r1, abs=1e-9)
            assert i2["latency_s"][0] == pytest.approx(i1["latency_s"], abs=1e-9)
            last = i2["final_obs"][0] if te2[0] or tr2[0] else o2[0]
            np.testing.assert_allclose(o1, last[:17], atol=1e-5)
            assert (te1, tr1) == (bool(te2[0]), bool(tr2[0]))
            if te1 or tr1:
                break


def test_make_vec_spaces_determinism_and_autoreset(traces):
    vec = gym.make_vec("OffloadFleet-v0", num_envs=4, traces=traces, episode_requests=30)
    assert vec.num_envs == 4
    assert vec.observation_space.shape == (4, FLEET_OBS_DIM)
    assert vec.single_observation_space.shape == (FLEET_OBS_DIM,)
    obs_a, _ = vec.reset(seed=3)
    obs_b, _ = vec.reset(seed=3)
    np.testing.assert_array_equal(obs_a, obs_b)
    assert vec.observation_space.contains(obs_a)
    vec.action_space.seed(0)
    ended_seen = False
    for _ in range(35):
        actions = vec.action_space.sample()
        obs, reward, terminated, truncated, info = vec.step(actions)
        assert obs.dtype == np.float32 and vec.observation_space.contains(obs)
        assert reward.shape == (4,) and terminated.dtype == bool and truncated.dtype == bool
        assert obs is not obs_a  # a new array every step
        if (terminated | truncated).any():
            ended_seen = True
            mask = info["_final_obs"]
            assert mask.tolist() == (terminated | truncated).tolist()
            assert vec.single_observation_space.contains(info["final_obs"][mask][0])
            # SAME_STEP: the returned observation is the next episode's first one.
            assert (obs[mask][:, 7] == 0).all()  # a fresh request, not late
    assert ended_seen
    vec.close()


def test_devices_meet_in_the_cloud(traces):
    """Cloud-only on one worker: a big fleet queues, a single device does not."""
    scenario = load_scenario(None).with_updates(cloud="iaas")

    def mean_queue(n: int) -> float:
        fleet = OffloadFleetEnv(n, scenario, traces, episode_requests=50,
                                capacity=Capacity(workers=1, max_batch=4))  # fmt: skip
        fleet.reset(seed=0)
        queue = []
        for _ in range(50):
            _, _, _, _, info = fleet.step(np.tile([0, 6, 0], (n, 1)))
            queue.append(info["queue_s"][info["offloaded"]])
        return float(np.concatenate(queue).mean())

    assert mean_queue(1) == 0.0
    assert mean_queue(256) > 0.01
    # The device sees the queue in its own answers (the 18th feature).
    fleet = OffloadFleetEnv(256, scenario, traces, episode_requests=50,
                            capacity=Capacity(workers=1, max_batch=4))  # fmt: skip
    fleet.reset(seed=0)
    for _ in range(20):
        obs, *_ = fleet.step(np.tile([0, 6, 0], (256, 1)))
    assert obs[:, -1].mean() > 0.0


def test_bad_fleet_input_is_a_clear_error(traces, tmp_path):
    with pytest.raises(ValueError, match="at least one device"):
        OffloadFleetEnv(0, traces=traces)
    fleet = OffloadFleetEnv(2, traces=traces)
    with pytest.raises(RuntimeError, match="reset"):
        fleet.step(np.zeros((2, 3), dtype=np.int64))
    fleet.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        fleet.step(np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="device 1: action cut=9"):
        fleet.step(np.array([[0, 0, 0], [9, 0, 0]]))
    probing = load_scenario(None)
    probing = probing.with_updates(probe=type(probing.probe)(interval_s=5.0))
    with pytest.raises(ScenarioError, match="probes"):
        OffloadFleetEnv(2, probing, traces)
    with pytest.raises(Exception, match="not a readable batch-times file"):
        OffloadFleetEnv(2, traces=traces, capacity=Capacity(workers=2,
                        batch_times=str(tmp_path / "missing.json")))  # fmt: skip


# -- training and evaluation -------------------------------------------------------------
def test_sb3_adapter_reports_episode_ends(traces):
    from stable_baselines3.common.vec_env import VecMonitor

    from agents.fleet_vec import FleetVecEnv

    fleet = OffloadFleetEnv(3, traces=traces, episode_requests=12)
    venv = VecMonitor(FleetVecEnv(fleet, action_repeat=4))
    venv.seed(0)
    obs = venv.reset()
    assert obs.shape == (3, FLEET_OBS_DIM)
    ends = []
    for _ in range(3):  # 12 requests = 3 held decisions of 4
        obs, reward, done, infos = venv.step(np.zeros(3, dtype=np.int64))
        ends.append(done.copy())
    assert ends[-1].all() and not ends[0].any()
    assert all("episode" in info and "terminal_observation" in info for info in infos)
    assert infos[0]["terminal_observation"].shape == (FLEET_OBS_DIM,)


def test_train_and_evaluate_a_fleet_end_to_end(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from conftest import TINY_HYPERPARAMS

    root = Path(__file__).resolve().parent.parent
    scenario = tmp_path / "fleet.toml"
    text = (root / "envs" / "scenarios" / "fleet.toml").read_text()
    text = text.replace("episode_requests = 400", "episode_requests = 32")
    text = text.replace("devices = 128 ", "devices = 4 ").replace("[32, 64, 128, 256]", "[2, 4]")
    scenario.write_text(text)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_HYPERPARAMS)

    def run(*args):
        return subprocess.run([sys.executable, *args], cwd=root, capture_output=True, text=True)

    out = run("train.py", "--name", "fleet", "--runs-dir", str(tmp_path), "--config", str(cfg),
              "--scenario", str(scenario), "--timesteps", "512", "--trace-source", "builtin",
              "--no-progress")  # fmt: skip
    assert out.returncode == 0, out.stderr
    config = json.loads((tmp_path / "fleet" / "config.json").read_text())
    assert config["obs_dim"] == FLEET_OBS_DIM
    out = run("evaluate.py", "--policy", str(tmp_path / "fleet"), "--scenario", str(scenario),
              "--episodes", "1", "--requests", "16", "--trace-source", "builtin",
              "--policies", "ppo,cloud_only,edge_only_exits", "--out", str(tmp_path / "eval"),
              "--json", str(tmp_path / "fleet.json"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "fleet.json").read_text())
    assert report["fleet_sizes"] == [2, 4]
    assert set(report["results"]["4"]) == {"ppo", "ppo_single", "cloud_only", "edge_only_exits"}
    assert "cloud_only" in report["ppo_vs"]["2"]
    assert (tmp_path / "eval" / "fleet.png").stat().st_size > 0


def test_fleet_rollouts_share_stateless_policies_and_copy_stateful_ones(traces):
    from agents.base import FixedPolicy
    from agents.fleet_rollout import PerDevice

    class Counting(FixedPolicy):
        def reset(self):
            self.calls = 0

    shared = PerDevice(FixedPolicy(0, 6, 0), 3, 17)
    assert shared.copies[0] is shared.copies[2]  # never a copy of the system it reads
    own = PerDevice(Counting(0, 6, 0), 3, 17)
    assert own.copies[0] is not own.copies[1] and own.copies[1].calls == 0


def test_each_device_of_a_fleet_can_start_from_its_own_telemetry(traces):
    from telemetry.observation import OBS_NAMES, Telemetry

    fleet = OffloadFleetEnv(3, None, traces, trace_split=None, episode_requests=5)
    measured = [Telemetry(rtt_est_s=r) for r in (0.05, 0.2, 0.4)]
    obs, _ = fleet.reset(seed=1, options={"telemetry_by_device": measured})
    rtt = obs[:, OBS_NAMES.index("rtt_over_deadline")] * fleet.scenario.workload.deadline_s
    np.testing.assert_allclose(rtt, [0.05, 0.2, 0.4], rtol=1e-6)
    assert (obs[:, OBS_NAMES.index("tput_age_log1p_s")] > 9.0).all()  # no sample measured
