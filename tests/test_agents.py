import math

import numpy as np
import pytest

from agents.base import FixedPolicy, ObservationView, RandomPolicy
from agents.heuristics import CloudOnly, Edgent, EdgeOnly, Neurosurgeon, Spinn
from agents.oracle import LabelBlindOracle, Oracle
from agents.planner import DevicePlanner, ForesightPlanner
from agents.predictor import Predictor
from agents.rollout import make_specs, run_many
from envs import OffloadEnv
from telemetry.observation import ObservationContext, Telemetry, build_observation
from traces.sets import load_families


@pytest.fixture(scope="module")
def env():
    return OffloadEnv(
        trace_source="builtin", trace_split="test", sample_split="test", episode_requests=60
    )


@pytest.fixture(scope="module")
def predictor(env):
    return Predictor(env.system)


def observation(env, bandwidth_bps, rtt_s=0.07, battery=1.0, lateness_s=0.0):
    """What the device would observe after a transfer at ``bandwidth_bps``."""
    tel = Telemetry(rtt_est_s=rtt_s, battery_level=battery)
    tel.record_transfer(0.0, bandwidth_bps / 8.0, 1.0)
    s = env.system
    ctx = ObservationContext(s.scenario.workload.deadline_s, s.n_cuts, s.n_thresholds,
                             s.n_levels, 10.0, 1.0, s.cloud.keep_alive_s)  # fmt: skip
    return build_observation(tel, 0.1, lateness_s, 0, ctx)


def test_observation_view_reads_back_what_was_built(env):
    obs = observation(env, 3e6, rtt_s=0.05, battery=0.4)
    view = ObservationView(obs)
    assert view.bandwidth_bps == pytest.approx(3e6, rel=1e-5)
    assert view.rtt_s == pytest.approx(0.05, rel=1e-5)
    assert view.battery == pytest.approx(0.4)


def test_fixed_rules(env):
    s = env.system
    obs = observation(env, 1e6)
    assert EdgeOnly(s).act(obs).tolist() == [s.k, s.n_thresholds - 1, 0]
    assert EdgeOnly(s, threshold=3).act(obs).tolist() == [s.k, 3, 0]
    assert CloudOnly(s).act(obs).tolist() == [0, s.n_thresholds - 1, 0]
    # The cheapest lossless-enough input codec: never larger than raw on average.
    level = CloudOnly(s, best_codec=True).act(obs)[2]
    val = s.profile.splits["val"]
    assert val.sent_bytes[0, level].mean() <= val.sent_bytes[0, 0].mean()


def test_neurosurgeon_goes_local_on_a_dead_link_and_remote_on_a_fast_one(env, predictor):
    s = env.system
    ns = Neurosurgeon(s, predictor)
    assert ns.act(observation(env, 2e3))[0] == s.k  # 2 kbit/s: nothing beats local
    assert ns.act(observation(env, 100e6, rtt_s=0.01))[0] < s.k  # fast link: offload
    # Its choice is the argmin of the predicted latency over cuts and codecs, no exits.
    obs = observation(env, 1e6)
    lat = predictor.latency_s(1e6, 0.07)[:, s.n_thresholds - 1, :]
    cut, thr, level = ns.act(obs)
    assert thr == s.n_thresholds - 1 and lat[cut, level] == lat.min()


def test_neurosurgeon_energy_needs_a_radio(env, predictor):
    with pytest.raises(ValueError, match="radio"):
        Neurosurgeon(env.system, predictor, objective="energy")


def test_edgent_meets_the_deadline_when_it_can(env, predictor):
    s = env.system
    ed = Edgent(s, predictor)
    for bw in (5e4, 1e6, 50e6):
        act = ed.act(observation(env, bw))
        lat = predictor.latency_s(bw, 0.07)
        feasible = lat <= s.scenario.workload.deadline_s
        if feasible.any():
            assert lat[tuple(act)] <= s.scenario.workload.deadline_s
            best_acc = predictor.stats.accuracy[feasible].max()
            assert predictor.stats.accuracy[tuple(act)] == pytest.approx(best_acc)


def test_spinn_respects_its_accuracy_floor(env, predictor):
    sp = Spinn(env.system, predictor)
    for bw in (1e4, 1e6, 1e8):
        act = sp.act(observation(env, bw))
        assert predictor.stats.accuracy[tuple(act)] >= sp.floor - 1e-9


def test_random_policy_does_not_touch_the_env_stream(env):
    spec = make_specs(load_families("builtin", split="test")[0]["fcc"], 1, 0, (1.0, 1.0))
    a = run_many(env, RandomPolicy(tuple(env.action_space.nvec), seed=1), spec)
    b = run_many(env, FixedPolicy(0, 6, 0), spec)
    assert np.array_equal(a["arrival_uplink_bps"], b["arrival_uplink_bps"])


def test_common_random_numbers_same_seed_same_results(env):
    traces = load_families("builtin", split="test")[0]["hsdpa"]
    specs = make_specs(traces, 3, 42, (0.2, 1.0))
    again = make_specs(traces, 3, 42, (0.2, 1.0))
    assert specs == again
    pol = Spinn(env.system, Predictor(env.system))
    a, b = run_many(env, pol, specs), run_many(env, pol, again)
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_oracle_picks_the_best_scored_action_in_every_state(env):
    traces = load_families("builtin", split="test")[0]["oboe"]
    spec = make_specs(traces, 1, 3, (0.5, 1.0))[0]
    env.reset(
        seed=spec.seed,
        options={
            "trace": spec.trace,
            "offset_s": spec.offset_s,
            "battery_level": spec.battery_level,
        },
    )
    oracle = Oracle()
    for _ in range(10):
        act = oracle.act_privileged(env)
        chosen = env.simulate(*act)
        # Among local actions (no tail amortisation involved), none scores higher.
        s = env.system
        for thr in range(s.n_thresholds):
            local = env.simulate(s.k, thr, 0)
            if not chosen.offloaded:
                assert chosen.reward >= local.reward - 1e-12
        env.step(act)


def test_oracle_is_not_worse_than_any_policy_on_the_same_requests(env):
    families = load_families("builtin", split="test")[0]
    specs = [s for fam in sorted(families) for s in make_specs(families[fam], 2, 5, (0.05, 1.0))]
    s, pred = env.system, Predictor(env.system)
    oracle = run_many(env, Oracle(), specs)["reward"].mean()
    for policy in (
        EdgeOnly(s),
        EdgeOnly(s, 3),
        CloudOnly(s),
        CloudOnly(s, True),
        Neurosurgeon(s, pred),
        Edgent(s, pred),
        Spinn(s, pred),
        RandomPolicy(tuple(env.action_space.nvec), 0),
    ):
        assert oracle >= run_many(env, policy, specs)["reward"].mean(), policy.name


def _flip_labels(system) -> None:
    """Every answer's correctness inverted, in place (what a realized credit reads)."""

    def flip(x):
        return [flip(y) for y in x] if isinstance(x, list) else (not x)

    system.exit_ok = system.exit_credit = flip(system.exit_ok)
    system.final_ok = system.final_credit = flip(system.final_ok)


def test_label_blind_oracle_ignores_labels_and_the_oracle_does_not():
    traces = load_families("builtin", split="test")[0]["hsdpa"]
    spec = make_specs(traces, 1, 4, (0.6, 0.6))[0]

    def actions(policy, flipped: bool) -> list[tuple]:
        env = OffloadEnv(trace_source="builtin", trace_split="test", sample_split="test",
                         episode_requests=40)  # fmt: skip
        if flipped:
            _flip_labels(env.system)
            env.reload_system()
        options = {"trace": spec.trace, "offset_s": spec.offset_s, "battery_level": 0.6}
        env.reset(seed=spec.seed, options=options)
        out = []
        for _ in range(40):
            act = policy.act_privileged(env)
            out.append(tuple(act))
            env.step(act)
        return out

    blind = LabelBlindOracle()
    assert actions(blind, False) == actions(blind, True)
    assert actions(Oracle(), False) != actions(Oracle(), True)


def test_label_blind_oracle_picks_the_best_calibrated_local_action(env):
    traces = load_families("builtin", split="test")[0]["oboe"]
    spec = make_specs(traces, 1, 6, (0.5, 1.0))[0]
    options = {"trace": spec.trace, "offset_s": spec.offset_s,
               "battery_level": spec.battery_level}  # fmt: skip
    env.reset(seed=spec.seed, options=options)
    s, oracle = env.system, LabelBlindOracle()

    def score(out):
        battery = env.state.battery_j / s.battery_capacity_j
        return s.reward(out.expected, out.latency_s, out.energy_j, 0.0, 0.0, battery, out.carbon_g)

    for _ in range(10):
        act = oracle.act_privileged(env)
        chosen = env.simulate(*act)
        if not chosen.offloaded:  # local actions need no tail amortisation
            for cut in range(1, s.k + 1):
                for thr in range(s.n_thresholds):
                    local = env.simulate(cut, thr, 0)
                    if not local.offloaded:
                        assert score(chosen) >= score(local) - 1e-12
        env.step(act)


@pytest.mark.parametrize("switch_top", [0, 3])
def test_planner_leaves_the_simulator_as_it_found_it_and_holds_its_plan(env, switch_top):
    spec = make_specs(load_families("builtin", split="test")[0]["fcc"], 1, 2, (0.7, 0.7))[0]
    env.reset(seed=spec.seed, options={"trace": spec.trace, "offset_s": spec.offset_s,
                                       "battery_level": 0.7})  # fmt: skip
    planner = ForesightPlanner(horizon=6, hold=3, switch_top=switch_top)
    before = (env.state, env.state.battery_j, env.state.index, env.telemetry.last_sample_s)
    first = planner.act_privileged(env)
    after = (env.state, env.state.battery_j, env.state.index, env.telemetry.last_sample_s)
    assert before == after
    chosen = [first]
    for _ in range(5):
        env.step(chosen[-1])
        chosen.append(planner.act_privileged(env))
    assert all(np.array_equal(a, first) for a in chosen[:3])  # held for 3 requests
    planner.reset()
    assert planner._left == 0
    with pytest.raises(ValueError, match="horizon"):
        ForesightPlanner(horizon=0)
    with pytest.raises(ValueError, match="switch_top"):
        ForesightPlanner(switch_top=-1)


def test_planner_ignores_labels_and_opens_the_upload_regime_greedy_search_does_not():
    """On LTE the first upload pays a radio tail and a FaaS cold start that only the
    requests after it repay: the greedy label-blind search never pays it, the planner
    (which sees 40 requests ahead) does. Flipping every label changes nothing."""
    spec = make_specs(load_families("builtin", split="test")[0]["oboe"], 1, 6, (0.9, 0.9))[0]

    def run(policy, flipped=False):
        env = OffloadEnv(trace_source="builtin", trace_split="test", sample_split="test",
                         episode_requests=48)  # fmt: skip
        if flipped:
            _flip_labels(env.system)
            env.reload_system()
        return run_many(env, policy, [spec])

    planned, greedy = run(ForesightPlanner()), run(LabelBlindOracle())
    assert planned["offloaded"].mean() > 0.5 and greedy["offloaded"].mean() == 0.0
    flipped = run(ForesightPlanner(), flipped=True)
    for field in ("cut", "threshold", "level"):
        assert np.array_equal(planned[field], flipped[field])


def test_device_planner_plans_only_on_what_the_device_knows():
    """Changing the future (the link, the coming images, arrivals not yet seen) changes
    nothing the device planner decides; its plans do change with the device's estimate."""
    from dataclasses import replace

    from traces import Trace

    spec = make_specs(load_families("builtin", split="test")[0]["oboe"], 1, 3, (0.8, 0.8))[0]
    env = OffloadEnv(trace_source="builtin", trace_split="test", sample_split="test",
                     episode_requests=40)  # fmt: skip
    env.reset(seed=spec.seed, options={"trace": spec.trace, "offset_s": spec.offset_s,
                                       "battery_level": 0.8})  # fmt: skip
    for _ in range(5):
        env.step(np.array([0, 6, 0]))  # upload raw images: the device measures its link
    st = env.state
    i, now = st.index, env.decision_time()
    chosen = tuple(DevicePlanner(horizon=40, hold=4).act_privileged(env))
    other_future = replace(
        st,
        trace=Trace("other", "oboe", (0.0,), (5e4,), 1e6, 0.3),
        samples=st.samples[:i] + [(x + 17) % env.system.n_samples for x in st.samples[i:]],
        arrivals=[a if a <= now else a + 0.5 for a in st.arrivals],
    )
    env.state = other_future
    assert tuple(DevicePlanner(horizon=40, hold=4).act_privileged(env)) == chosen
    tel = env.telemetry
    for _ in range(8):  # the device now measures a nearly dead link
        tel.record_transfer(now, 100.0, 1.0)
    env.telemetry = tel
    assert tuple(DevicePlanner(horizon=40, hold=4).act_privileged(env)) != chosen


def test_device_planner_given_all_foresight_plans_as_the_clairvoyant_planner():
    """``knows`` hands the device planner the future piece by piece; with all of it,
    its view is the simulator's and it chooses as ``ForesightPlanner`` does."""
    spec = make_specs(load_families("builtin", split="test")[0]["oboe"], 1, 5, (0.8, 0.8))[0]
    env = OffloadEnv(trace_source="builtin", trace_split="test", sample_split="test",
                     episode_requests=40)  # fmt: skip
    env.reset(seed=spec.seed, options={"trace": spec.trace, "offset_s": spec.offset_s,
                                       "battery_level": 0.8})  # fmt: skip
    everything = DevicePlanner(horizon=12, hold=4, knows=DevicePlanner.FORESIGHT)
    clairvoyant = ForesightPlanner(horizon=12, hold=4)
    assert everything.name == "planner_device+link+arrivals+images"
    # Nothing left to sample: one future, however many were asked for.
    assert len(DevicePlanner(knows=("arrivals", "images"))._views(env, env.snapshot())) == 1
    for _ in range(12):
        action = everything.act_privileged(env)
        np.testing.assert_array_equal(action, clairvoyant.act_privileged(env))
        env.step(action)
    # Each piece of foresight on its own: the view keeps that piece of the truth and
    # replaces the others with the device's assumptions.
    real = env.snapshot()
    st = real[0]
    for known in DevicePlanner.FORESIGHT:
        view = DevicePlanner(knows=(known,))._views(env, real)[0][0]
        assert (view.trace is st.trace) == (known == "link")
        assert (view.arrivals == st.arrivals) == (known == "arrivals")
        assert (view.samples == st.samples) == (known == "images")
    assert DevicePlanner(knows=("link",)).name == "planner_device+link"
    # Unseen arrivals come after now: at the mean rate, or drawn per sampled scenario.
    now, seen = env.decision_time(), sum(a <= env.decision_time() for a in st.arrivals)
    point = DevicePlanner(scenarios=1)._views(env, real)[0][0]
    gap = 1.0 / env.scenario.workload.rate_hz
    np.testing.assert_allclose(np.diff([now] + point.arrivals[seen:]), gap)
    views = [v for v, _ in DevicePlanner(scenarios=3, knows=("link",))._views(env, real)]
    assert len(views) == 3 and views[0].samples != views[1].samples
    assert views[0].arrivals[:seen] == st.arrivals[:seen]
    assert min(views[0].arrivals[seen:]) > now and views[0].arrivals != views[1].arrivals
    with pytest.raises(ValueError, match="scenarios"):
        DevicePlanner(scenarios=0)
    with pytest.raises(ValueError, match="weather"):
        DevicePlanner(knows=("link", "weather"))


def test_calibrated_reward_separates_label_luck_from_skill(env):
    """A label-blind policy scores the same in expectation at realized and at calibrated
    accuracy; the oracle, which knows each image's answer, loses its luck."""
    from agents.metrics import summarise

    families = load_families("builtin", split="test")[0]
    specs = make_specs(families["fcc"], 6, 9, (0.05, 1.0))
    cap = env.system.battery_capacity_j
    cloud = summarise(run_many(env, CloudOnly(env.system), specs), cap)
    assert abs(cloud["reward_calibrated"] - cloud["reward_mean"]) < 0.03
    oracle_rows = run_many(env, Oracle(), specs)
    oracle = summarise(oracle_rows, cap)
    assert oracle["reward_calibrated"] < oracle["reward_mean"] - 0.015
    # The expected accuracy is the calibrated table's value for the answer given.
    s = env.system
    local = ~oracle_rows["offloaded"]
    assert np.all((oracle_rows["accuracy_expected"] >= 0) & (oracle_rows["accuracy_expected"] <= 1))
    assert oracle_rows["correct"][local].mean() > oracle_rows["accuracy_expected"][local].mean()
    assert len(s.exit_expected) == s.k


def test_oracle_refuses_plain_act():
    with pytest.raises(RuntimeError, match="simulator"):
        Oracle().act(np.zeros(3))


def test_make_specs_needs_traces():
    with pytest.raises(ValueError):
        make_specs([], 1, 0, (0, 1))
    assert math.isfinite(
        make_specs(load_families("builtin")[0]["fcc"], 2, 0, (0.5, 0.5))[0].offset_s
    )


def test_imitation_learns_the_oracles_choices():
    from stable_baselines3 import PPO

    from agents.imitation import collect_oracle, pretrain_actor
    from envs.wrappers import DistinctActions, env_actions

    env = OffloadEnv(trace_source="builtin", episode_requests=50)
    obs, actions = collect_oracle(env, 600, seed=0)
    table = env_actions(env)
    assert obs.shape == (600, 17) and actions.min() >= 0 and actions.max() < len(table)
    model = PPO("MlpPolicy", DistinctActions(env), seed=0, device="cpu")
    z = (obs - obs.mean(0)) / (obs.std(0) + 1e-6)
    # From the observation alone the oracle's choice is hard to predict (it hinges on
    # what the device cannot see); the actor gets to about the most common choice's
    # share, far above the untrained policy's 1/194.
    most_common = np.bincount(actions).max() / len(actions)
    accuracy = pretrain_actor(model, z, actions, epochs=30, seed=0)
    assert accuracy > 0.9 * most_common and accuracy > 20 / len(table)


def radio_context(s, radio):
    deadline, keep_alive = s.scenario.workload.deadline_s, s.cloud.keep_alive_s
    return ObservationContext(
        deadline, s.n_cuts, s.n_thresholds, s.n_levels, radio.tail_s, radio.tail_w, keep_alive
    )


def test_best_fixed_by_context_reads_radio_and_battery_from_the_observation(env):
    from agents.best_fixed import ContextualFixed, radio_key

    lte = env.system.catalog.radio("lte")
    key = radio_key(lte.tail_s, lte.tail_w)
    policy = ContextualFixed({(key, 0): (5, 0, 0), (key, 1): (0, 6, 0)}, [0.5], (2, 1, 1))
    tel = Telemetry(rtt_est_s=0.07, battery_level=0.2)
    tel.record_transfer(0.0, 1e5, 1.0)
    s = env.system
    ctx = radio_context(s, lte)
    assert policy.act(build_observation(tel, 0.1, 0.0, 0, ctx)).tolist() == [5, 0, 0]
    tel.battery_level = 0.9
    assert policy.act(build_observation(tel, 0.1, 0.0, 0, ctx)).tolist() == [0, 6, 0]
    wifi = env.system.catalog.radio("wifi")  # a radio it never saw: the fallback
    ctx = radio_context(s, wifi)
    assert policy.act(build_observation(tel, 0.1, 0.0, 0, ctx)).tolist() == [2, 1, 1]


def test_best_fixed_by_context_picks_each_contexts_best_action():
    from agents.best_fixed import find_best_fixed_by_context, radio_key

    families = load_families("builtin", split="train")[0]
    traces = families["hsdpa"][:2] + families["fcc"][:2]
    small = OffloadEnv(traces=traces, sample_split="val", episode_requests=20)
    policy = find_best_fixed_by_context(small, traces, episodes=1, battery_edges=(0.5,))
    # Every (radio, band) of the two families was searched.
    radios = {radio_key(r.tail_s, r.tail_w) for r in (small.system.radio("hsdpa"),
                                                      small.system.radio("fcc"))}  # fmt: skip
    assert set(policy.table) == {(k, band) for k in radios for band in (0, 1)}
    # With one family and one band it is the plain best fixed action on the same episodes.
    from agents.best_fixed import find_best_fixed

    one = families["hsdpa"][:2]
    small = OffloadEnv(traces=one, sample_split="val", episode_requests=20)
    by_context = find_best_fixed_by_context(small, one, episodes=2, seed=7, battery_edges=())
    plain, _ = find_best_fixed(small, one, episodes=2, seed=7)
    assert list(by_context.table.values()) == [tuple(plain.act(np.zeros(1)).tolist())]


def test_demonstrations_of_a_realizable_expert_are_its_own_actions():
    from agents.imitation import collect_demonstrations
    from envs.wrappers import env_actions

    env = OffloadEnv(trace_source="builtin", episode_requests=20)
    obs, actions = collect_demonstrations(env, FixedPolicy(0, 6, 0), 50, seed=1)
    table = env_actions(env)
    assert obs.shape == (50, 17) and {table[a] for a in actions} == {(0, 6, 0)}


def test_frozen_observation_statistics_ignore_updates_and_pickle():
    import pickle

    from agents.imitation import FrozenRunningMeanStd

    demo = np.random.default_rng(0).normal(2.0, 3.0, size=(500, 17))
    rms = FrozenRunningMeanStd.of(demo)
    before = (rms.mean.copy(), rms.var.copy(), rms.count)
    rms.update(np.full((100, 17), 50.0))  # what exploring would feed it
    assert np.array_equal(rms.mean, before[0]) and rms.count == before[2]
    again = pickle.loads(pickle.dumps(rms))  # VecNormalize.save pickles it
    assert isinstance(again, FrozenRunningMeanStd) and np.array_equal(again.var, before[1])


def test_paired_difference_cancels_what_the_episodes_share():
    from agents.metrics import paired_difference

    rng = np.random.default_rng(0)
    episode = np.repeat(np.arange(6), 5)
    shared = rng.normal(0.0, 1.0, 6)[episode]  # hard and easy episodes, for both policies
    b = {"episode": episode, "reward": shared + rng.normal(0.0, 0.01, 30)}
    a = {"episode": episode, "reward": b["reward"] + 0.1}
    diff, ci = paired_difference(a, b)
    assert diff == pytest.approx(0.1) and ci == pytest.approx(0.0, abs=1e-12)
    b_shifted = {"episode": episode + 1, "reward": b["reward"]}
    with pytest.raises(ValueError, match="same episodes"):
        paired_difference(a, b_shifted)


def test_latency_mask_of_the_masking_experiment(env):
    """experiments/masked_ppo.py: what the device predicts too slow is masked."""
    from experiments.masked_ppo import LatencyMask

    s = env.system
    mask = LatencyMask(s, deadlines=1.0)  # Edgent's test: within the deadline
    index = {tuple(a): i for i, a in enumerate(mask.table)}
    everything_local = index[(s.k, s.n_thresholds - 1, 0)]  # the full model, no exits
    raw_image = index[(0, s.n_thresholds - 1, 0)]
    fast = mask(observation(env, 50e6, rtt_s=0.02))
    assert fast[raw_image] and not fast[everything_local]
    slow = mask(observation(env, 2e3, rtt_s=0.3))
    assert not slow[raw_image] and slow.sum() < fast.sum()
    # Nothing fits a request already 10 deadlines late: then nothing is masked.
    late = mask(observation(env, 50e6, lateness_s=10 * s.scenario.workload.deadline_s))
    assert late.all()


def test_true_bandwidth_observation_of_the_observation_experiment():
    """experiments/true_bandwidth.py: the bandwidth features read the trace's true rate."""
    from experiments.true_bandwidth import TrueBandwidth

    env = TrueBandwidth(OffloadEnv(trace_source="builtin", trace_split="test",
                                   sample_split="test", episode_requests=5))  # fmt: skip
    obs, _ = env.reset(seed=3)
    done = False
    while not done:
        base = env.unwrapped
        st = base.state
        true_bps = st.trace.rate_at(st.offset_s + base.decision_time())
        view = ObservationView(obs)
        assert view.bandwidth_bps == pytest.approx(max(true_bps, 1e3), rel=1e-4)
        assert view["tput_age_log1p_s"] == 0.0
        obs, _, terminated, truncated, _ = env.step(np.array([0, 6, 0]))
        done = terminated or truncated


def test_future_bandwidth_observation_of_the_forecast_experiment():
    """experiments/future_bandwidth.py: the device's features stay, and the added ones
    are the true rate now and the true mean rate over each horizon ahead."""
    from experiments.future_bandwidth import FutureBandwidth

    base = OffloadEnv(trace_source="builtin", trace_split="test", sample_split="test",
                      episode_requests=5)  # fmt: skip
    env = FutureBandwidth(base, horizons_s=(2.0, 30.0))
    assert env.observation_space.shape == (base.observation_space.shape[0] + 3,)
    obs, _ = env.reset(seed=3)
    done = False
    while not done:
        st = base.state
        t = st.offset_s + base.decision_time()
        device_view = base.observe()
        np.testing.assert_array_equal(obs[: len(device_view)], device_view)
        expected = [st.trace.rate_at(t)] + [st.trace.window_mean_bps(t, h) for h in (2.0, 30.0)]
        got = 10.0 ** obs[len(device_view) :].astype(np.float64) * 1e6
        np.testing.assert_allclose(got, np.maximum(expected, 1e3), rtol=1e-4)
        assert env.observation_space.contains(obs)
        obs, _, terminated, truncated, _ = env.step(np.array([0, 6, 0]))
        done = terminated or truncated
    with pytest.raises(ValueError, match="horizons"):
        FutureBandwidth(base, horizons_s=(0.0,))


class _RankedPolicy:
    """A fixed preference over the distinct actions: ``logits`` ranks them, ``act``
    takes the first (the interface ``PolicyRollout`` needs from its base policy)."""

    name = "ranked"

    def __init__(self, env, first, second):
        from envs.wrappers import env_actions

        self.table = np.asarray(env_actions(env), dtype=np.int64)
        rows = [tuple(r) for r in self.table.tolist()]
        self._logits = np.zeros(len(rows))
        self._logits[rows.index(tuple(first))] = 2.0
        self._logits[rows.index(tuple(second))] = 1.0

    def logits(self, observation):
        return self._logits

    def act(self, observation):
        return self.table[int(np.argmax(self._logits))].copy()


def test_policy_rollout_keeps_a_good_base_and_improves_a_bad_one():
    """experiments/ppo_rollout.py: the base policy is one of the candidates, so with a
    margin no candidate can clear it acts exactly as its base; a base that answers
    everything on the device (missing every deadline) is replaced, on the futures the
    rollout sees, by its second choice (upload the image), and the real episode gains."""
    from experiments.ppo_rollout import PolicyRollout

    spec = make_specs(load_families("builtin", split="test")[0]["fcc"], 1, 4, (0.9, 0.9))[0]
    env = OffloadEnv(trace_source="builtin", trace_split="test", sample_split="test",
                     episode_requests=48)  # fmt: skip
    s = env.system
    edge, cloud = (s.k, s.n_thresholds - 1, 0), (0, s.n_thresholds - 1, 0)
    base = _RankedPolicy(env, edge, cloud)
    plain = run_many(env, base, [spec])
    kept = run_many(env, PolicyRollout(base, top=2, margin=1e9, horizon=16, hold=8), [spec])
    np.testing.assert_array_equal(kept["reward"], plain["reward"])
    rollout = PolicyRollout(base, top=2, horizon=16, hold=8, knows=DevicePlanner.FORESIGHT)
    improved = run_many(env, rollout, [spec])
    assert rollout.deviations > 0 and improved["offloaded"].any()
    assert improved["reward"].mean() > plain["reward"].mean() + 0.1
    assert rollout.name == "ranked+rollout"
    with pytest.raises(ValueError, match="top must be >= 1, got 0"):
        PolicyRollout(base, top=0)
    with pytest.raises(ValueError, match="margin must be >= 0, got -1"):
        PolicyRollout(base, margin=-1.0)
