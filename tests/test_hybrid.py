"""The hybrid cloud as the simulator runs it: the VM answers at its exits below the
split and calls no function; the rest pay a function call (and a cold start when its
keep-alive ran out); latency, money and carbon follow ``sim.formulas``; a bad hybrid
entry is refused naming the field; a fleet shares a hybrid's VM and functions."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT

from profiles import DEFAULT_CATALOG
from profiles.catalog import CatalogError, load_catalog
from sim import System, formulas, load_scenario
from sim import kernel as K
from sim.cloud_cost import hybrid_split, tail_cost, tail_seconds
from sim.scenario import ScenarioError

HYBRID = ROOT / "envs" / "scenarios" / "hybrid.toml"


def _catalog(tmp_path, *edits: tuple[str, str]) -> str:
    """The built-in catalog with ``(old, new)`` replacements, written to ``tmp_path``."""
    text = DEFAULT_CATALOG.read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "catalog.toml"
    path.write_text(text)
    return str(path)


def _episode(scenario, steps: int = 300, seed: int = 5):
    """Random actions on ``scenario`` (the same requests for the same seed): each step's
    action, info and kernel row, with the sample it drew."""
    from envs import OffloadEnv

    env = OffloadEnv(scenario, trace_source="builtin", episode_requests=steps)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(steps):
        dev = env.devices
        sample = int(dev.samples[0, dev.ints[0, K.I_INDEX]])
        action = rng.integers(env.action_space.nvec)
        _, _, term, trunc, info = env.step(action)
        served = env.check_action(action)[:3]  # a level beyond its cut's own: the cut's last
        rows.append((served, info, dev.out[0].copy(), sample))
        if term or trunc:
            break
    return env.system, rows


@pytest.fixture(scope="module")
def episode(tmp_path_factory):
    """The hybrid scenario with a 0.5 s keep-alive on the functions (cold and warm calls
    both happen at 2 requests per second)."""
    tmp = tmp_path_factory.mktemp("hybrid")
    catalog = _catalog(tmp, ("keep_alive_s = 360.0", "keep_alive_s = 0.5"))
    return _episode(load_scenario(HYBRID).with_updates(catalog=catalog))


def _offloaded(episode):
    s, rows = episode
    return s, [(a, info, o, i) for a, info, o, i in rows if info["offloaded"]]


def test_the_split_is_the_cost_models_choice():
    s = System(load_scenario(HYBRID))
    h = s.hybrid
    assert h is not None and h.vm.name == "iaas" and h.functions.name == "faas"
    for cut in range(s.k):
        for j, t in enumerate(s.thresholds):
            split = int(h.split[cut, j])
            assert split == hybrid_split(s, h.vm, h.functions, cut, t, s.cloud.rate_hz)
            assert cut <= split <= s.k
            cost = tail_cost(s, h.vm, h.functions, cut, t, s.cloud.rate_hz)
            if cost.split > cut:
                assert split == cost.split
    assert (h.split > np.arange(s.k)[:, None]).any(), "some requests should start on the VM"
    assert ((h.split > np.arange(s.k)[:, None]) & (h.split < s.k)).any(), "and some split"


def test_an_answer_at_a_vm_exit_pays_no_function_call_and_no_cold_start(episode):
    s, rows = _offloaded(episode)
    h, split_data = s.hybrid, s.profile.splits[s.scenario.workload.sample_split]
    answered = 0
    for (cut, thr, _), info, o, i in rows:
        b = int(o[K.O_CLOUD_EXIT])
        if b == 0:
            continue
        answered += 1
        split = int(h.split[cut, thr])
        assert cut < b <= split
        assert b == s.first_exit[thr][i]  # the first exit that reaches the threshold
        assert o[K.O_FN_CALL] == 0.0 and o[K.O_FN] == 0.0 and not info["cold_start"]
        vm_s = h.vm.overhead_s + h.vm_cum[b] - h.vm_cum[cut]
        assert info["cloud_s"] == pytest.approx(vm_s, rel=1e-12)
        assert info["correct"] == bool(split_data.exit_correct[b - 1, i])
        assert info["exit_block"] == 0  # the device did not answer
    assert answered >= 5


def test_past_the_split_a_function_runs_the_rest_cold_when_its_keep_alive_ran_out(episode):
    s, rows = _offloaded(episode)
    h, keep_alive = s.hybrid, s.cloud.keep_alive_s
    split_data = s.profile.splits[s.scenario.workload.sample_split]
    calls = colds = warm = 0
    last_call_done = -np.inf  # the episode starts with no warm function
    for (cut, thr, level), info, o, i in rows:
        split = int(h.split[cut, thr])
        if o[K.O_CLOUD_EXIT] > 0:
            continue
        vm_s = h.vm.overhead_s + h.vm_cum[split] - h.vm_cum[cut] if split > cut else 0.0
        assert o[K.O_VM] == pytest.approx(vm_s, rel=1e-12)
        assert info["correct"] == bool(split_data.final_correct[cut, level, i])
        if split == s.k:  # the whole tail on the VM, to its final exit
            assert o[K.O_FN_CALL] == 0.0 and not info["cold_start"]
            assert info["cloud_s"] == pytest.approx(vm_s, rel=1e-12)
            continue
        calls += 1
        fn_s = tail_seconds(s.profile, h.functions, split)
        assert o[K.O_FN_CALL] == 1.0 and o[K.O_FN] == pytest.approx(fn_s, rel=1e-12)
        reaches = o[K.O_TX_END] + vm_s
        cold = reaches - last_call_done > keep_alive
        assert info["cold_start"] == cold
        colds, warm = colds + cold, warm + (not cold)
        cold_s = s.cloud.cold_start_s if cold else 0.0
        assert info["cloud_s"] == pytest.approx(vm_s + fn_s + cold_s, rel=1e-12)
        assert s.cloud.cold_start_s == h.functions.cold_start_s
        last_call_done = o[K.O_DONE]
    assert calls >= 5 and colds >= 1 and warm >= 1


def test_latency_money_and_carbon_follow_the_formulas(episode):
    s, rows = _offloaded(episode)
    h = s.hybrid
    v, f = h.vm, h.functions
    for _, info, o, _ in rows:
        vm_s, fn_s = o[K.O_VM], o[K.O_FN]
        # Device (after any wait), upload and RTT, then the VM, the function, a cold start.
        arrival = o[K.O_TX_START] - info["device_s"] - info["wait_s"]
        rtt = info["network_s"] - (o[K.O_TX_END] - o[K.O_TX_START])
        cold_s = s.cloud.cold_start_s if info["cold_start"] else 0.0
        cloud_s = vm_s + fn_s + cold_s
        assert info["cloud_s"] == pytest.approx(cloud_s, rel=1e-12)
        latency = o[K.O_TX_END] + rtt + cloud_s - arrival
        assert info["latency_s"] == pytest.approx(latency, rel=1e-9)
        usd = formulas.iaas_busy_usd(vm_s, v.price_per_s, v.utilisation)
        grams = formulas.cloud_carbon_g(vm_s, v.watts, v.pue, h.vm_g_per_j)
        if o[K.O_FN_CALL]:
            usd += formulas.faas_call_usd(
                fn_s, f.billing_granularity_s, f.price_per_request, f.price_per_gb_s, f.memory_gb
            )
            grams += formulas.cloud_carbon_g(fn_s, f.watts, f.pue, h.fn_g_per_j)
        money = formulas.request_money_usd(info["sent_bytes"], s.data_usd_per_byte, usd)
        assert info["money_usd"] == pytest.approx(money, rel=1e-12)
        carbon = formulas.request_carbon_g(info["energy_j"], s.device_g_per_j, grams)
        assert info["carbon_g"] == pytest.approx(carbon, rel=1e-12)
    assert h.vm_g_per_j == pytest.approx(s.catalog.grids[v.grid].g_per_kwh / 3.6e6)


def test_a_hybrid_that_never_splits_is_the_functions_request_for_request(tmp_path):
    """At a rate where functions are cheapest at every cut, the hybrid sends every tail
    to them: the same requests cost exactly what the FaaS cloud charges."""
    catalog = _catalog(tmp_path, ("rate_hz = 200.0", "rate_hz = 0.01"))
    hybrid = load_scenario(HYBRID).with_updates(catalog=catalog)
    s, mixed = _episode(hybrid, steps=120, seed=9)
    assert (s.hybrid.split == np.arange(s.k)[:, None]).all()
    _, faas = _episode(hybrid.with_updates(cloud="faas"), steps=120, seed=9)
    keys = ("latency_s", "cloud_s", "money_usd", "carbon_g", "energy_j", "correct", "cold_start")
    for (a, x, _, _), (b, y, _, _) in zip(mixed, faas, strict=True):
        assert a == b and all(x[k] == y[k] for k in keys), (a, x, y)


@pytest.mark.parametrize(
    "edits, message",
    [
        (
            (('functions = "faas"', 'functions = "iaas"'),),
            r"\[clouds.hybrid\].functions: 'iaas' is of kind 'iaas'",
        ),
        ((('vm = "iaas"', 'vm = "lambda"'),), r"\[clouds.hybrid\].vm: 'lambda' is not an entry"),
        ((("rate_hz = 200.0", "rate_hz = 0"),), r"\[clouds.hybrid\].rate_hz: 0(\.0)? out of range"),
        ((("rate_hz = 200.0", ""),), r"\[clouds.hybrid\].rate_hz: missing"),
        (
            (('vm = "iaas"', 'vm = "iaas"\nspeedup = 2.0'),),
            r"\[clouds.hybrid\].speedup: not a field",
        ),
        ((('kind = "faas"', 'kind = "faas"\nvm = "iaas"'),), r"\[clouds.faas\].vm: only a kind"),
    ],
)
def test_a_bad_hybrid_entry_is_refused_naming_the_field(tmp_path, edits, message):
    with pytest.raises(CatalogError, match=message):
        load_catalog(_catalog(tmp_path, *edits))


def _fleet_rows(scenario, cloud: str, n: int = 3, steps: int = 40, seed: int = 3, capacity=None):
    """Random actions that offload (the same for the same seed) on a fleet of ``n`` devices sharing
    the cloud (``shared``) or each with its own (``private``): each step's outcome rows,
    until a device's episode ends."""
    from envs.fleet_env import OffloadFleetEnv

    fleet = OffloadFleetEnv(
        n,
        scenario,
        trace_source="builtin",
        episode_requests=steps + 1,
        cloud=cloud,
        capacity=capacity,
    )
    fleet.reset(seed=seed)
    rng = np.random.default_rng(seed)
    nvec = fleet.single_action_space.nvec
    rows = []
    for _ in range(steps):
        actions = rng.integers(nvec, size=(n, len(nvec)))
        actions[:, 0] = rng.integers(0, 2, n)  # offloaded at cut 0 or 1
        _, _, term, trunc, _ = fleet.step(actions)
        rows.append(fleet.devices.out.copy())
        if (term | trunc).any():
            break
    return fleet, np.stack(rows)


PATH = [K.O_OFFLOADED, K.O_VM, K.O_FN, K.O_FN_CALL, K.O_CLOUD_EXIT, K.O_CORRECT, K.O_MONEY]


def test_a_fleet_on_an_unlimited_hybrid_is_as_many_single_devices(tmp_path):
    """With no limit on the VM or the functions, each device of a fleet sharing a hybrid
    takes the path one device alone takes: the same VM exits, function calls, seconds
    and bill (the shared functions' cold starts differ: another device's instance may
    be warm); with no cold start, every outcome is the same."""
    from sim.capacity import Capacity

    scenario = load_scenario(HYBRID)
    shared = _fleet_rows(scenario, "shared", capacity=Capacity())[1]
    alone = _fleet_rows(scenario, "private")[1]
    assert shared.shape == alone.shape and shared[:, :, K.O_FN_CALL].sum() >= 5
    assert shared[:, :, K.O_CLOUD_EXIT].any() and (shared[:, :, K.O_QUEUE] == 0.0).all()
    np.testing.assert_array_equal(shared[:, :, PATH], alone[:, :, PATH])
    catalog = _catalog(tmp_path, ("cold_start_s = 0.8", "cold_start_s = 0.0"))
    warm = scenario.with_updates(catalog=catalog)
    shared = _fleet_rows(warm, "shared", capacity=Capacity())[1]
    alone = _fleet_rows(warm, "private")[1]
    columns = [c for c in range(K.N_OUT) if c != K.O_COLD]
    np.testing.assert_allclose(shared[:, :, columns], alone[:, :, columns], rtol=0, atol=1e-12)


def _hybrid_cloud(**capacity):
    from sim.capacity import Capacity
    from sim.cloud import SharedCloud

    s = System(load_scenario(HYBRID))
    return s, SharedCloud(s, Capacity(**capacity))


def test_a_hybrid_vm_with_one_worker_queues_requests_that_overlap():
    s, cloud = _hybrid_cloud(workers=1)
    k, no = s.k, [False, False]
    q, service, cold = cloud.serve_hybrid([0.001, 0.0], [0.010, 0.020], no, [k, k])
    assert q.tolist() == [pytest.approx(0.019), 0.0] and service.tolist() == [0.010, 0.020]
    assert not cold.any()
    # A request with no VM part (the whole tail on the functions) waits for no worker.
    q, _, _ = cloud.serve_hybrid([0.005], [0.0], [True], [1])
    assert q[0] == 0.0
    for free in (_hybrid_cloud(workers=2)[1], _hybrid_cloud()[1]):  # two workers; no limit
        q, _, _ = free.serve_hybrid([0.001, 0.0], [0.010, 0.020], no, [k, k])
        assert (q == 0.0).all()


def test_a_hybrid_function_concurrency_of_one_queues_function_calls():
    s, cloud = _hybrid_cloud(workers=1, concurrency=1, throttle_retry_s=0.1)
    fn, cold_start = float(s.hybrid.fn_tail_s[2]), s.cloud.cold_start_s
    assert cold_start > 0.0 and s.cloud.keep_alive_s > 1.0
    # The second waits 5 ms for the one VM worker, leaves it at 0.02, then waits for
    # the one function instance (busy with the first, cold, call): queue = both waits.
    q, service, cold = cloud.serve_hybrid([0.0, 0.005], [0.01, 0.01], [True, True], [2, 2])
    assert cold.tolist() == [True, False]
    assert q[0] == 0.0 and service[0] == pytest.approx(0.01 + fn + cold_start)
    busy_until = 0.01 + fn + cold_start  # the one instance; the second call retries
    fn_wait = q[1] - 0.005
    assert busy_until - 0.02 <= fn_wait + 1e-9 <= busy_until - 0.02 + 0.1 + 1e-9
    assert service[1] == pytest.approx(0.01 + fn) and cloud.throttled == 1
    # No concurrency limit: a second instance, cold, and no wait.
    _, free = _hybrid_cloud(workers=1)
    q, _, cold = free.serve_hybrid([0.0, 0.01], [0.01, 0.01], [True, True], [2, 2])
    assert q.tolist() == [0.0, pytest.approx(0.0)] and cold.tolist() == [True, True]


def test_a_shared_hybrid_bills_by_the_formulas_and_its_queue_counts_in_the_latency():
    from sim.capacity import Capacity

    scenario = load_scenario(HYBRID)
    fleet, rows = _fleet_rows(scenario, "shared", n=16, capacity=Capacity(workers=1, concurrency=2))
    s = fleet.system
    h, cold_start = s.hybrid, s.cloud.cold_start_s
    sent = rows[rows[:, :, K.O_OFFLOADED] > 0]
    assert len(sent) >= 50 and (sent[:, K.O_QUEUE] > 0).any() and sent[:, K.O_COLD].any()
    for o in sent:
        vm_s, fn_s = o[K.O_VM], o[K.O_FN]
        assert bool(o[K.O_FN_CALL]) == (fn_s > 0.0)
        service = vm_s + fn_s + (cold_start if o[K.O_COLD] else 0.0)
        assert o[K.O_CLOUD] == pytest.approx(service + o[K.O_QUEUE], rel=1e-12)
        f = h.functions
        usd = formulas.hybrid_usd(
            vm_s,
            fn_s,
            bool(o[K.O_FN_CALL]),
            h.vm.price_per_s,
            h.vm.utilisation,
            f.billing_granularity_s,
            f.price_per_request,
            f.price_per_gb_s,
            f.memory_gb,
        )
        money = formulas.request_money_usd(o[K.O_SENT], s.data_usd_per_byte, usd)
        assert o[K.O_MONEY] == pytest.approx(money, rel=1e-12)
        grams = formulas.hybrid_carbon_g(
            vm_s, fn_s, h.vm.watts, h.vm.pue, h.vm_g_per_j, f.watts, f.pue, h.fn_g_per_j
        )
        carbon = formulas.request_carbon_g(o[K.O_ENERGY], s.device_g_per_j, grams)
        assert o[K.O_CARBON] == pytest.approx(carbon, rel=1e-12)


def test_a_hybrid_fleet_scenario_loads_and_runs_the_one_kind_paths_refuse_it(tmp_path):
    from sim.capacity import Capacity

    fleet_hybrid = ROOT / "envs" / "scenarios" / "fleet_hybrid.toml"
    sc = load_scenario(fleet_hybrid)
    assert sc.cloud == "hybrid" and sc.fleet.devices > 1
    assert sc.capacity.workers > 0 and sc.capacity.concurrency > 0
    assert System(sc).hybrid is not None
    # Workers and concurrency stay one kind's on the others.
    text = HYBRID.read_text().replace('catalog = "builtin"', f'catalog = "{DEFAULT_CATALOG}"')
    for cloud, key in (("iaas", "concurrency"), ("faas", "workers")):
        path = tmp_path / f"{cloud}.toml"
        path.write_text(
            text.replace('cloud = "hybrid"', f'cloud = "{cloud}"') + f"\n[capacity]\n{key} = 2\n"
        )
        with pytest.raises(ScenarioError, match=rf"\[capacity\].{key} = 2"):
            load_scenario(path)
    from sim.cloud import SharedCloud

    cloud = SharedCloud(System(load_scenario(HYBRID)), Capacity(workers=1))
    with pytest.raises(ValueError, match="serve_hybrid"):
        cloud.serve(0.0, 1)


def test_the_cloud_report_prices_the_scenarios_own_parts():
    from agents.cloud_report import cost_rows

    s = System(load_scenario(HYBRID))
    report = cost_rows(s, cut=1)
    assert report["iaas_cloud"] == "iaas" and report["faas_cloud"] == "faas"
    assert report["hybrid_rate_hz"] == s.cloud.rate_hz


def test_the_runtime_paths_that_run_one_kind_of_cloud_refuse_a_hybrid(tmp_path, capsys):
    """The server's cloud emulation (a batch table) and sim-to-real's loopback server
    run one VM or one kind of function: a hybrid is refused, naming its parts, before
    a server starts."""
    from runtime_hooks import sim2real
    from sim.capacity import Capacity
    from sim.cloud import batch_seconds

    s = System(load_scenario(HYBRID))
    with pytest.raises(ScenarioError, match=r"hybrid.toml.*'hybrid' is a hybrid.*vm 'iaas'"):
        batch_seconds(s, Capacity())
    trace = tmp_path / "trace.txt"
    trace.write_text("".join(f"{t} 2.0\n" for t in range(30)))
    argv = ["--scenario", str(HYBRID), "--trace", str(trace), "--out", str(tmp_path / "o")]
    assert sim2real.main(argv) == 2
    assert "but sim-to-real" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "argv, names",
    [
        (["--rates", "abc"], ("--rates 'abc'",)),
        (["--rates", "0"], ("--rates '0'", "[workload].rate_hz")),
        (["--episodes", "0"], ("--episodes",)),
        (["--requests", "0"], ("--requests",)),
        (["--clouds", "nope"], ("--clouds 'nope'", "not in the catalog")),
        (["--actions", "1:3"], ("--actions '1:3'", "0..5")),
        (["--actions", "9:3:2"], ("--actions '9:3:2'",)),
    ],
)
def test_the_cloud_comparison_refuses_bad_arguments_before_any_run(
    argv, names, capsys, monkeypatch
):
    from conftest import refused, tripwire

    from bench import cloud_kinds

    monkeypatch.setattr(cloud_kinds, "run", tripwire)
    refused(cloud_kinds.main, argv, capsys, *names)


def test_the_cloud_report_and_the_device_loop_check_their_inputs(tmp_path, capsys):
    """The report's --out is checked (never inside a training run); the device loop,
    which talks to one real server, refuses a hybrid scenario."""
    from conftest import refused

    from agents import cloud_report
    from runtime_hooks.device_loop import device_policy

    run = tmp_path / "run"
    run.mkdir()
    (run / "files.sha256.json").write_text("{}")
    refused(cloud_report.main, ["--out", str(run / "costs")], capsys, "training run")
    with pytest.raises(ScenarioError, match="but the device loop"):
        device_policy("edgent", System(load_scenario(HYBRID)))


@pytest.mark.parametrize("line", ["max_batch = 4", 'batch_times = "x.json"'])
def test_a_hybrid_refuses_the_vm_batching_it_does_not_do(line, tmp_path):
    text = (ROOT / "envs" / "scenarios" / "fleet_hybrid.toml").read_text()
    text = text.replace("\n[capacity]\n", f"\n[capacity]\n{line}\n")
    (tmp_path / "x.json").write_text("{}")
    path = tmp_path / "s.toml"
    path.write_text(text.replace('"../../', f'"{ROOT}/'))
    key = line.split(" ")[0]
    with pytest.raises(ScenarioError, match=rf"\[capacity\].{key} = .*hybrid, whose VM serves"):
        load_scenario(path)
