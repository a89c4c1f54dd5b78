"""Model variants: compressed device blocks as a fourth action component.

The variants are built from the real model (``profiles.variants``), measured into
``profiles/data/profile_fmnist_variants.npz`` (``profiles.variant_profile``) and offered
by ``envs/scenarios/variants.toml``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from envs import OffloadEnv
from envs.wrappers import distinct_actions, env_actions
from profiles.profile_io import ProfileError, load_profile
from sim import kernel as K
from sim import physics
from sim.scenario import ScenarioError, load_scenario
from sim.system import System

ROOT = Path(__file__).resolve().parents[1]
VARIANTS_PROFILE = ROOT / "profiles" / "data" / "profile_fmnist_variants.npz"
VARIANTS_SCENARIO = ROOT / "envs" / "scenarios" / "variants.toml"


@pytest.fixture(scope="module")
def profile():
    return load_profile(VARIANTS_PROFILE)


@pytest.fixture(scope="module")
def env():
    return OffloadEnv(VARIANTS_SCENARIO, trace_source="builtin", episode_requests=200)


def test_the_profile_holds_each_variant_measured_on_the_same_samples(profile):
    assert profile.variant_names == ("float32", "int8", "pruned50")
    base = profile.splits["test"]
    for name in ("int8", "pruned50"):
        v = profile.variant(name)
        t = v.splits["test"]
        assert np.array_equal(t.labels, base.labels)
        # Cut 0 runs nothing on the device: the base model's figures exactly.
        assert np.array_equal(t.final_correct[0], base.final_correct[0])
        assert np.array_equal(t.sent_bytes[0], base.sent_bytes[0])
        # Deeper cuts run the variant's blocks: measured, not copied.
        assert not np.array_equal(t.final_correct[1:], base.final_correct[1:])
        assert not np.array_equal(v.block_host_s, profile.block_host_s)
        # The cloud's tail, codecs and leakage stay the base model's.
        assert np.array_equal(v.leakage, profile.leakage)
        assert np.array_equal(v.encode_host_s, profile.encode_host_s)
    weights = {n: profile.variants[n].block_bytes.sum() for n in ("int8", "pruned50")}
    float_bytes = np.array(profile.meta["variants"]["int8"]["float_block_bytes"]).sum()
    assert weights["int8"] < 0.3 * float_bytes and weights["pruned50"] < 0.6 * float_bytes


def test_an_unknown_variant_is_refused_naming_the_profile_and_its_variants(profile):
    with pytest.raises(ProfileError, match="has no model variant 'int4'.*float32, int8, pruned50"):
        profile.variant("int4")
    scenario = load_scenario(VARIANTS_SCENARIO).with_updates(variants=("float32", "int4"))
    with pytest.raises(ScenarioError, match=r"variants.toml: \[scenario\].variants: 'int4' is not"):
        System(scenario)
    with pytest.raises(ScenarioError, match="names a variant twice"):
        load_scenario(VARIANTS_SCENARIO).with_updates(variants=("int8", "int8"))
    with pytest.raises(ScenarioError, match="list of model variant names"):
        load_scenario(VARIANTS_SCENARIO).with_updates(variants="int8")


def test_a_hybrid_cloud_and_the_device_loop_refuse_variants(tmp_path):
    from runtime_hooks.device_loop import device_policy

    text = VARIANTS_SCENARIO.read_text().replace('cloud = "faas"', 'cloud = "hybrid"')
    text = text.replace('"../../profiles/data/', f'"{ROOT}/profiles/data/')
    path = tmp_path / "hybrid_variants.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=r"variants = .*is a hybrid"):
        System(load_scenario(path))
    with pytest.raises(ScenarioError, match=r"variants = .*the device loop"):
        device_policy("edgent", System(load_scenario(VARIANTS_SCENARIO)))


def test_more_than_one_variant_adds_a_fourth_action_component(env):
    s = env.system
    assert s.n_variants == 3 and tuple(env.action_space.nvec) == (s.n_cuts, 7, s.n_levels, 3)
    actions = env_actions(env)
    assert all(len(a) == 4 for a in actions)
    # cut 0 runs no block: one variant there; every other action under each variant.
    triples = distinct_actions(s.n_cuts, 7, s.n_levels, levels_by_cut=s.levels_by_cut)
    at_zero = sum(1 for a in triples if a[0] == 0)
    assert len(actions) == at_zero + 3 * (len(triples) - at_zero)
    assert OffloadEnv(trace_source="builtin").action_space.nvec.tolist() == [6, 7, 8]


def test_three_components_run_the_first_variant(env):
    rows = []
    for action in (np.array([3, 2, 1]), np.array([3, 2, 1, 0])):
        env.reset(seed=4)
        for _ in range(30):
            env.step(action)
        rows.append(env.devices.out[0].copy())
    assert np.array_equal(rows[0], rows[1])


def test_each_variant_is_charged_its_own_blocks_and_answers(env):
    """Under each variant the device time is that variant's blocks (the simulator's
    formula on the variant's System) and the answer its own per-sample correctness."""
    s = env.system
    for v, vs in enumerate(s.variant_systems):
        env.reset(seed=11)
        for _ in range(40):
            dev = env.devices
            i = int(dev.samples[0, dev.ints[0, K.I_INDEX]])
            _, _, _, _, info = env.step(np.array([s.k, 6, 0, v]))  # all local, no exits
            assert info["variant"] == v
            assert info["device_s"] == pytest.approx(physics.device_seconds(vs, s.k, False, 0, 0))
            assert info["correct"] == bool(vs.exit_ok[s.k - 1][i])
    full = [physics.device_seconds(vs, s.k, False, 0, 0) for vs in s.variant_systems]
    assert full[1] < full[0] and full[2] < full[0]  # int8 and pruned50 are faster here


def test_a_variant_runs_on_the_base_models_clock_and_cloud():
    s = System(load_scenario(VARIANTS_SCENARIO))
    base, int8 = s.variant_systems[0], s.variant_systems[1]
    assert int8.slowdown == base.slowdown
    assert int8.cloud_tail_s == base.cloud_tail_s and int8.cloud_usd == base.cloud_usd
    ratio = np.asarray(int8.profile.block_host_s) / np.asarray(base.profile.block_host_s)
    measured = s.base_profile.meta["variants"]["int8"]["time_ratio"]
    assert ratio == pytest.approx(measured, rel=1e-3)
    # On the device: the base model's block times, scaled by the measured ratio.
    assert int8.block_dev_s == pytest.approx(np.asarray(base.block_dev_s) * ratio, rel=1e-12)


def test_the_heuristics_search_every_variant(env):
    from agents.heuristics import make_heuristic
    from agents.predictor import Predictor

    s = env.system
    pred = Predictor(s)
    assert pred.stats.accuracy.shape[0] == 3 * s.n_cuts
    # Nothing crosses a link of 1 bit/s: Neurosurgeon runs everything on the device, and
    # of the variants, the one predicted fastest.
    from telemetry.observation import OBS_NAMES

    neuro = make_heuristic("neurosurgeon", s, predictor=pred)
    obs = np.zeros(len(OBS_NAMES), np.float32)
    obs[OBS_NAMES.index("tput_hmean_log10_mbps")] = -6.0
    obs[OBS_NAMES.index("deadline_log10_s")] = np.log10(s.scenario.workload.deadline_s)
    act = neuro.act(obs)
    full = [physics.device_seconds(vs, s.k, False, 0, 0) for vs in s.variant_systems]
    assert len(act) == 4 and act[0] == s.k and act[3] == int(np.argmin(full))
    assert pred.action(2 * s.n_cuts + 3, 1, 2).tolist() == [3, 1, 2, 2]


# -- building and measuring ---------------------------------------------------------------
@pytest.fixture(scope="module")
def model_and_data():
    from profiles.dataset import load
    from profiles.model import build
    from profiles.multiexit import to_model_input

    data = load()
    train = torch.from_numpy(to_model_input(data["train"][0][:1024]))
    return build(), train, data


def test_int8_and_pruned_blocks_keep_the_shapes_and_most_of_the_accuracy(model_and_data):
    from profiles.multiexit import to_model_input
    from profiles.variants import PrunedBlock, block_bytes, build_variant

    model, train, data = model_and_data
    x = torch.from_numpy(to_model_input(data["test"][0][:500]))
    labels = data["test"][1][:500]

    def accuracy(blocks) -> float:
        with torch.inference_mode():
            h = x
            for block in blocks:
                h = block(h)
            return float((model.exits[-1](h).argmax(1).numpy() == labels).mean())

    base = accuracy(model.blocks)
    floors = {"int8": base - 0.02, "pruned50": base - 0.08}
    built = {}
    for name, floor in floors.items():
        blocks = built[name] = build_variant(name, model, train)
        h, hv = x[:4], x[:4]
        with torch.inference_mode():
            for fb, vb in zip(model.blocks, blocks, strict=True):
                h, hv = fb(h), vb(hv)
                assert hv.shape == h.shape  # what the cloud's float tail expects
        assert accuracy(blocks) >= floor
        assert sum(block_bytes(b) for b in blocks) < sum(block_bytes(b) for b in model.blocks)
    pruned = built["pruned50"]
    assert all(isinstance(b, PrunedBlock) for b in pruned[1:])
    assert [b.conv.in_channels for b in pruned[1:]] == [8, 16, 24, 32]


def test_a_variant_needs_conv_bn_relu_blocks():
    from torch import nn

    from profiles.variants import VariantError, build_variant

    class Other(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(4, 4)), nn.Linear(4, 4)])
            self.exits = nn.ModuleList([nn.Linear(4, 2), nn.Linear(4, 2)])

    with pytest.raises(VariantError, match="block 1: model variants need blocks of Conv2d"):
        build_variant("int8", Other(), torch.zeros(4, 4))


def test_measuring_the_float_blocks_as_a_variant_reproduces_the_profile():
    """The variant measurement, run on the base model's own blocks, gives the profile's
    per-sample arrays: it measures what the profiler measures."""
    from profiles.multiexit import ModelSpec
    from profiles.profile_io import SplitData
    from profiles.variant_profile import measure_split

    profile = load_profile(VARIANTS_PROFILE)
    n = 120
    base = profile.splits["test"]
    sub = SplitData(
        labels=base.labels[:n],
        exit_conf=base.exit_conf[:, :n],
        exit_correct=base.exit_correct[:, :n],
        sent_bytes=base.sent_bytes[:, :, :n],
        final_correct=base.final_correct[:, :, :n],
    )
    from profiles.bottleneck import load as load_bottleneck
    from profiles.multiexit import data_for_profile, model_for_profile

    model, spec = model_for_profile(profile)
    assert isinstance(spec, ModelSpec)
    split = data_for_profile(profile, spec)["test"]
    split = type(split)(split.inputs[:n], split.labels[:n])
    bottlenecks = {
        (e["cut"], e["level"]): load_bottleneck(profile.path.parent / e["file"], model, spec)
        for e in profile.bottlenecks.values()
    }
    got = measure_split(profile, model, spec, list(model.blocks), split, sub, bottlenecks)
    assert np.array_equal(got["exit_correct"], sub.exit_correct)
    assert np.allclose(got["exit_conf"], sub.exit_conf, atol=1e-5)
    assert np.array_equal(got["sent_bytes"], sub.sent_bytes)
    assert (got["final_correct"] == sub.final_correct).mean() > 0.999


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--variants", "int4"], "--variants 'int4': unknown 'int4'; name each of int8, pruned50"),
        (["--variants", "int8,int8"], "at most once"),
        (["--out", "{tmp}/profile.txt"], "must name a .npz file"),
        (["--out", "{tmp}/notes.npz"], "is not a profile (made by python -m profiles.profile)"),
        (["--profile", "{tmp}/missing.npz", "--out", "{tmp}/v.npz"], "profile file not found"),
    ],
)
def test_the_variant_profiler_refuses_bad_arguments_before_any_work(
    argv, message, tmp_path, capsys
):
    from profiles import variant_profile

    (tmp_path / "notes.npz").write_bytes(b"not a profile")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert variant_profile.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert not (tmp_path / "v.npz").exists() and not (tmp_path / "profile.txt.npz").exists()


def test_a_fleet_takes_three_or_four_components_and_random_draws_four():
    from agents.base import RandomPolicy
    from envs.fleet_env import OffloadFleetEnv

    fleet = OffloadFleetEnv(2, VARIANTS_SCENARIO, trace_source="builtin", episode_requests=20)
    fleet.reset(seed=0)
    fleet.step(np.array([[5, 6, 0], [5, 6, 0]]))  # the first variant
    _, _, _, _, info = fleet.step(np.array([[5, 6, 0, 1], [5, 6, 0, 2]]))
    assert info["variant"].tolist() == [1, 2]
    with pytest.raises(ValueError, match=r"shape \(2, 3\) or \(2, 4\)"):
        fleet.step(np.array([[5, 6], [5, 6]]))
    draws = np.array([RandomPolicy((6, 7, 8, 3), seed=1).act(None) for _ in range(5)])
    assert draws.shape == (5, 4) and (draws < [6, 7, 8, 3]).all()


def test_a_run_is_loaded_only_with_the_variants_it_was_trained_on(tmp_path):
    """The action's variant index means the run's own list: a scenario listing other
    variants (or another order) is refused naming both; a run recorded before variants
    existed ran the float32 model."""
    import json
    import shutil

    from agents.ppo import RunError, load_ppo
    from agents.run_files import seal

    run = tmp_path / "run"
    shutil.copytree(
        ROOT / "runs" / "default", run, ignore=shutil.ignore_patterns("tb", "checkpoints")
    )
    assert load_ppo(run, variants=("float32",)) is not None
    config = json.loads((run / "config.json").read_text())
    config["variants"] = ["float32", "pruned50", "int8"]
    (run / "config.json").write_text(json.dumps(config))
    seal(run)
    with pytest.raises(
        RunError,
        match=r"variants \['float32', 'pruned50', 'int8'\].*lists \['float32', 'int8', 'pr",
    ):
        load_ppo(run, variants=("float32", "int8", "pruned50"))
