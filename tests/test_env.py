import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs  # noqa: F401  (registers Offload-v0)
from envs import OffloadEnv
from sim import load_scenario
from sim.scenario import Battery, Workload
from telemetry.observation import OBS_NAMES
from traces import Trace

RATE = 2e6  # bit/s


def constant_env(rate=RATE, **workload):
    sc = load_scenario()
    w = Workload(
        **{
            "arrival": "periodic",
            "rate_hz": 0.5,
            "deadline_s": 0.2,
            "episode_requests": 5,
            "sample_split": "test",
            **workload,
        }
    )
    sc = sc.with_updates(workload=w, battery=Battery(1.0, 1.0))
    trace = Trace("const", "oboe", (0.0,), (rate,), 100.0)  # oboe -> LTE radio
    return OffloadEnv(sc, [trace])


def test_gymnasium_and_sb3_checkers_pass():
    env = gym.make("Offload-v0", trace_source="builtin")
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(OffloadEnv(trace_source="builtin"), warn=True)


def test_make_with_kwargs():
    env = gym.make("Offload-v0", trace_source="builtin", trace_split="test", episode_requests=7)
    env.reset(seed=0)
    steps = 0
    while True:
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        steps += 1
        if term or trunc:
            break
    assert steps == 7 and trunc


def test_hand_computed_offload_matches_to_the_microsecond():
    env = constant_env()
    env.reset(seed=3)
    s, st = env.system, env.state
    i = st.samples[0]
    lte = s.catalog.radio("lte")
    faas = s.catalog.cloud("faas")
    dev = s.catalog.device("mcu")
    p = s.profile
    block_host, _ = p.compute_host_s()
    slow = (p.block_flops.sum() / block_host.sum()) / 1e9 / dev.gflops
    cut, level = 1, 3
    never = len(s.thresholds) - 1
    device_s = block_host[0] * slow + p.encode_host_s[cut, level] * slow
    nbytes = int(p.splits["test"].sent_bytes[cut, level, i])
    up_rate = RATE * lte.uplink_ratio
    tx = nbytes * 8 / up_rate
    cloud_busy = (p.block_host_s[cut:].sum() + p.exit_host_s[-1]) / faas.speedup + faas.overhead_s
    cloud_s = cloud_busy + faas.cold_start_s  # first use: the function is cold
    arrival = 2.0  # periodic at 0.5 Hz
    latency = device_s + tx + lte.rtt_s + cloud_s
    energy = (
        dev.active_power_w * device_s
        + (lte.base_w + lte.per_mbps_w * up_rate / 1e6) * tx
        + lte.tail_w * lte.tail_s
        + dev.idle_power_w * (lte.rtt_s + cloud_s)
    )
    billed = math.ceil(cloud_busy / 0.001 - 1e-9) * 0.001
    money = nbytes * 2.59e-9 + 2e-7 + 1.66667e-05 * 1.0 * billed
    _, reward, _, _, info = env.step([cut, never, level])
    assert info["offloaded"] and info["cold_start"] and info["sent_bytes"] == nbytes
    assert info["latency_s"] == pytest.approx(latency, abs=1e-6)
    assert info["energy_j"] == pytest.approx(energy, abs=1e-6)
    assert info["money_usd"] == pytest.approx(money, rel=1e-9)
    assert env.state.free_s == pytest.approx(arrival + latency, abs=1e-6)
    assert info["correct"] == bool(p.splits["test"].final_correct[cut, level, i])
    assert info["leakage"] == pytest.approx(p.leakage[cut, level])


def test_second_upload_inside_the_tail_pays_only_the_extension():
    env = constant_env()
    env.reset(seed=3)
    _, _, _, _, first = env.step([0, 6, 0])
    tail_end = env.state.radio_tail_end_s
    _, _, _, _, second = env.step([0, 6, 0])
    lte = env.system.catalog.radio("lte")
    tx_start = 4.0 + second["device_s"]
    refund = lte.tail_w * (tail_end - tx_start)
    assert not second["cold_start"]  # warm: within the keep-alive window
    radio_and_idle = second["energy_j"] - env.system.device.active_power_w * second["device_s"]
    tx = second["sent_bytes"] * 8 / (RATE * lte.uplink_ratio)
    expected = (lte.base_w + lte.per_mbps_w * RATE * lte.uplink_ratio / 1e6) * tx
    expected += lte.tail_w * lte.tail_s - refund
    expected += env.system.device.idle_power_w * (lte.rtt_s + second["cloud_s"])
    assert radio_and_idle == pytest.approx(expected, abs=1e-6)


def test_outage_makes_offloading_slow_exactly_as_integration_says():
    probe_env = constant_env()
    sc, s = probe_env.scenario, probe_env.system
    device_s = s.encode_dev_s[0][0]  # cut 0, raw: only the encoder runs on the device
    outage_start = 2.0 + device_s + 0.002  # 2 ms into the upload the link goes dark
    trace = Trace("outage", "oboe", (0.0, outage_start, 8.0), (RATE, 0.0, RATE), 20.0)
    env = OffloadEnv(sc, [trace])
    env.reset(seed=0, options={"trace": trace, "offset_s": 0.0})
    i = env.state.samples[0]
    nbytes = s.sent[0][0][i]
    up = RATE * s.catalog.radio("lte").uplink_ratio
    sent_before = 0.002 * up / 8
    assert 0 < sent_before < nbytes
    tx_end = 8.0 + (nbytes - sent_before) * 8 / up
    _, _, _, _, info = env.step([0, 6, 0])
    expected = tx_end + s.catalog.radio("lte").rtt_s + info["cloud_s"] - 2.0
    assert info["latency_s"] == pytest.approx(expected, abs=1e-6)
    assert info["latency_s"] > 5.9


def test_local_requests_cost_compute_only():
    env = constant_env()
    env.reset(seed=1)
    s = env.system
    _, _, _, _, info = env.step([s.k, len(s.thresholds) - 1, 0])
    assert not info["offloaded"] and info["sent_bytes"] == 0 and info["money_usd"] == 0
    assert info["exit_block"] == s.k and info["leakage"] == 0
    assert info["latency_s"] == pytest.approx(s.block_cum[-1] + s.exit_dev_s[-1])
    assert info["energy_j"] == pytest.approx(s.device.active_power_w * info["latency_s"])


def test_early_exit_uses_the_real_confidence():
    env = constant_env()
    env.reset(seed=2)
    s = env.system
    i = env.state.samples[0]
    thr = 0  # lowest threshold
    conf = s.profile.splits[env.scenario.workload.sample_split].exit_conf
    first = next((b for b in range(s.k - 1) if conf[b, i] >= s.thresholds[thr]), None)
    _, _, _, _, info = env.step([s.k, thr, 0])
    expected_block = (first + 1) if first is not None else s.k
    assert info["exit_block"] == expected_block
    assert info["correct"] == bool(s.exit_ok[expected_block - 1][i])


def test_same_seed_same_episode_bit_for_bit():
    def run(seed):
        env = OffloadEnv(trace_source="builtin", episode_requests=50)
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(0)
        out = [obs]
        for _ in range(50):
            obs, r, term, trunc, info = env.step(rng.integers(env.action_space.nvec))
            out += [obs, np.array([r, info["latency_s"], info["energy_j"]])]
            if term or trunc:
                break
        return np.concatenate(out)

    a, b, c = run(7), run(7), run(8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_restore_replays_a_snapshot_exactly_and_more_than_once():
    """Planners try action sequences from a snapshot: every replay must be the episode
    itself, probes (which change the telemetry) included."""
    from sim.scenario import Probe

    env = OffloadEnv(load_scenario().with_updates(probe=Probe(interval_s=2.0, bytes=1500)),
                     trace_source="builtin", episode_requests=40)  # fmt: skip
    env.reset(seed=3)
    rng = np.random.default_rng(1)
    actions = [rng.integers(env.action_space.nvec) for _ in range(40)]
    for a in actions[:10]:
        env.step(a)
    start = env.snapshot()

    def replay():
        out = []
        for a in actions[10:]:
            obs, r, term, trunc, info = env.step(a)
            out.append(np.concatenate([obs, [r, info["energy_j"], env.state.battery_j]]))
            if term or trunc:
                break
        return np.concatenate(out)

    first = replay()
    env.restore(start)
    second = replay()
    env.restore(start)
    assert np.array_equal(first, second) and np.array_equal(first, replay())
    assert env.state.index == 40  # every request was stepped


def test_battery_empty_terminates():
    sc = load_scenario()
    sc = sc.with_updates(battery=Battery(0.0001, 0.0001, capacity_j=1.0))
    env = OffloadEnv(sc, trace_source="builtin", episode_requests=200)
    env.reset(seed=0)
    for _ in range(200):
        _, _, term, trunc, _ = env.step([0, 6, 0])  # cloud-only: the radio tail drains it
        if term or trunc:
            break
    assert term and not trunc


@pytest.mark.parametrize(
    "action, message",
    [
        ([6, 0, 0], "cut=6 out of range 0..5"),
        ([0, 7, 0], "threshold=7"),
        ([0, 0, -1], "level=-1"),
        ([1, 2], "3 integers"),
        ("abc", "3 integers"),
    ],
)
def test_out_of_range_actions_are_named(action, message):
    env = OffloadEnv(trace_source="builtin")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(action)


def test_observation_uses_only_device_knowledge():
    env = constant_env()
    obs, _ = env.reset(seed=0)
    names = OBS_NAMES
    assert obs.shape == (len(names),)
    view = dict(zip(names, obs, strict=True))
    lte = env.system.catalog.radio("lte")
    assert view["tput_last_log10_mbps"] == pytest.approx(np.log10(RATE * lte.uplink_ratio / 1e6))
    assert view["battery_level"] == pytest.approx(1.0)
    _, _, _, _, _ = env.step([0, 6, 0])
    obs, _, _, _, _ = env.step([5, 6, 0])
    view = dict(zip(names, obs, strict=True))
    assert view["last_cut_frac"] == 1.0
    assert 0 < view["radio_tail_left_frac"] <= 1.0


def test_background_probes_refresh_the_estimate_and_are_charged():
    from sim.scenario import Probe

    env = constant_env(rate_hz=0.5)
    env = OffloadEnv(env.scenario.with_updates(probe=Probe(interval_s=3.0, bytes=1500)),
                     [Trace("const", "oboe", (0.0,), (RATE,), 100.0)])  # fmt: skip
    env.reset(seed=0)
    s = env.system
    first = env.telemetry.last_sample_s
    _, _, _, _, a = env.step([s.k, 0, 0])  # local: the link is not used ...
    _, _, _, _, b = env.step([s.k, 0, 0])
    # ... but 3 s after the last sample a probe runs and its cost lands on the request.
    assert env.telemetry.last_sample_s > first
    lte = s.catalog.radio("lte")
    probe_tx = 1500 * 8 / (RATE * lte.uplink_ratio)
    probe_j = (lte.base_w + lte.per_mbps_w * RATE * lte.uplink_ratio / 1e6) * probe_tx
    probe_j += lte.tail_w * lte.tail_s
    charged = [x["energy_j"] - s.device.active_power_w * x["device_s"] for x in (a, b)]
    assert max(charged) == pytest.approx(probe_j, rel=1e-9)
    assert max(x["money_usd"] for x in (a, b)) == pytest.approx(1500 * 2.59e-9)


def test_expected_accuracy_credit_keeps_outcomes_and_the_mean():
    realized = OffloadEnv(trace_source="builtin", episode_requests=300)
    expected = OffloadEnv(trace_source="builtin", episode_requests=300, accuracy_credit="expected")
    out = {}
    for name, env in (("r", realized), ("e", expected)):
        env.reset(seed=11)
        rows = [env.step([env.system.k, 0, 0]) for _ in range(300)]
        out[name] = (np.array([r[1] for r in rows]), [r[4]["correct"] for r in rows])
    assert out["r"][1] == out["e"][1]  # the same images, the same realized answers
    assert abs(out["r"][0].mean() - out["e"][0].mean()) < 0.05
    assert out["e"][0].std() < out["r"][0].std()
    with pytest.raises(ValueError, match="accuracy_credit"):
        OffloadEnv(trace_source="builtin", accuracy_credit="vibes")


def test_reset_can_start_from_a_devices_measured_telemetry():
    from telemetry.observation import Telemetry

    env = OffloadEnv(trace_source="builtin", episode_requests=5)
    measured = Telemetry(rtt_est_s=0.123, radio_tail_end_s=0.4)
    measured.record_transfer(-0.5, 50_000, 0.05)  # 8 Mbit/s, half a second before
    obs, _ = env.reset(seed=0, options={"telemetry": measured, "battery_level": 0.5})
    assert env.telemetry is not measured  # copied, not shared
    assert env.telemetry.rtt_est_s == 0.123 and env.state.radio_tail_end_s == 0.4
    assert obs[0] == pytest.approx(np.log10(8.0), abs=1e-6)
    assert obs[6] == pytest.approx(0.5)


def test_tail_potential_shaping_telescopes_and_rewards_a_started_tail():
    from envs.shaping import TailPotential
    from traces import Trace

    lte = Trace("c", "oboe", (0.0,), (4e6,), 600.0, 0.05)  # oboe -> the LTE radio
    gamma = 0.9
    env = TailPotential(OffloadEnv(traces=[lte], episode_requests=30), gamma)
    env.reset(seed=1)
    assert env.potential() == 0.0  # the radio starts idle
    total, discount = 0.0, 1.0
    offload = np.array([0, 6, 0])  # cut 0, raw: uploads every time
    for t in range(30):
        _, shaped, terminated, truncated, info = env.step(offload)
        if t == 0:
            assert env.potential() > 0.0  # the tail it started is stored value
            assert shaped > info["unshaped_reward"]
        total += discount * (shaped - info["unshaped_reward"])
        discount *= gamma
        if terminated or truncated:
            break
    # phi(s0) = 0 and phi(terminal) = 0: the discounted shaping terms sum to zero.
    assert total == pytest.approx(0.0, abs=1e-9)


def test_regime_potential_keeps_the_episode_total_and_refunds_a_regime_start():
    from envs.shaping import RegimePotential
    from traces import Trace

    lte = Trace("c", "oboe", (0.0,), (4e6,), 600.0, 0.05)  # oboe -> the LTE radio
    env = RegimePotential(OffloadEnv(traces=[lte], episode_requests=120))
    env.reset(seed=2, options={"battery_level": 0.5})
    assert env.potential() == 0.0  # idle radio, cold cloud
    assert env.cold_value > 1.0  # a 0.8 s cold start misses a 0.2 s deadline
    shaped_sum = unshaped_sum = 0.0
    offload, local = np.array([0, 6, 0]), np.array([5, 0, 0])
    for t in range(120):
        # Offload for a while, then stay local long enough for the tail to run out.
        _, shaped, terminated, truncated, info = env.step(offload if t < 20 else local)
        if t == 0:  # the regime's start: tail and cold start refunded at once
            assert info["cold_start"]
            assert shaped - info["unshaped_reward"] > env.cold_value
        shaped_sum += shaped
        unshaped_sum += info["unshaped_reward"]
        if terminated or truncated:
            break
    # Undiscounted: the shaping terms telescope to phi(end) - phi(start) = 0.
    assert shaped_sum == pytest.approx(unshaped_sum, abs=1e-9)


def test_shaping_discount_must_be_a_discount():
    from envs.shaping import RegimePotential, TailPotential

    env = OffloadEnv(trace_source="builtin", episode_requests=5)
    with pytest.raises(ValueError, match="discount must be in"):
        TailPotential(env, 1.5)
    with pytest.raises(ValueError, match="tail_share must be in .* got -0.5"):
        RegimePotential(env, tail_share=-0.5)


def test_action_repeat_holds_the_action_and_sums_the_rewards():
    from envs.wrappers import ActionRepeat

    held = ActionRepeat(OffloadEnv(trace_source="builtin", episode_requests=10), 4)
    plain = OffloadEnv(trace_source="builtin", episode_requests=10)
    held.reset(seed=5)
    plain.reset(seed=5)
    action = np.array([0, 6, 0])
    rewards = []
    for _ in range(10):
        _, r, _, truncated, _ = plain.step(action)
        rewards.append(r)
    sums = []
    for _ in range(3):  # 4 + 4 + the last 2 requests of the episode
        _, r, _, truncated, _ = held.step(action)
        sums.append(r)
    assert truncated and held.unwrapped.state.index == 10
    assert sums == pytest.approx([sum(rewards[:4]), sum(rewards[4:8]), sum(rewards[8:])])
    with pytest.raises(ValueError, match="action_repeat must be >= 1, got 0"):
        ActionRepeat(plain, 0)


@pytest.mark.parametrize(
    "action, message",
    [
        ([1.7, 0, 0], r"action cut=1.7 is not an integer"),
        (np.array([1.0, 0.0, 0.0]), r"action cut=1.0 is not an integer"),
        ([0, float("inf"), 0], r"action threshold=inf is not an integer"),
        ("123", r"action must be 3 integers"),
        ([0, 0, "1"], r"action level='1' is not an integer"),
        ([True, 0, 0], r"action cut=True is not an integer"),
        ([0, 0], r"action must be 3 integers"),
        ([0, 99, 0], r"action threshold=99 out of range 0..6"),
    ],
)
def test_non_integer_actions_are_refused_by_name(action, message):
    env = OffloadEnv(trace_source="builtin", episode_requests=3)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(action)
    env.step(np.array([5, 0, 0]))  # the refused actions changed nothing
    assert env.state.index == 1


def test_stepping_a_finished_episode_says_call_reset():
    env = OffloadEnv(trace_source="builtin", episode_requests=2)
    env.reset(seed=0)
    env.step([0, 6, 0])
    *_, truncated, _ = env.step((0, 6, 0))
    assert truncated
    with pytest.raises(RuntimeError, match=r"call reset\(\)"):
        env.step([0, 6, 0])
    env.reset(seed=1)
    env.step([0, 6, 0])  # fine again after reset
