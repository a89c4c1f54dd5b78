"""Bring your own model: a tiny model unlike the built-in one (a 1-D signal, 3 blocks,
4 classes, an exit after block 1 only besides the final one, synthetic data) taken
through profile -> check_env -> a short PPO run -> export -> server + device loop over
loopback, and the contract's errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_HYPERPARAMS

ROOT = Path(__file__).resolve().parent.parent

MODEL_FILE = textwrap.dedent(
    '''
    """A 1-D signal classifier with the project's model contract (written by a test)."""
    from pathlib import Path

    import numpy as np
    import torch
    from torch import nn

    HERE = Path(__file__).resolve().parent


    class Signal1D(nn.Module):
        input_shape = (2, 64)

        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([
                nn.Sequential(nn.Conv1d(2, 8, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2)),
                nn.Sequential(nn.Conv1d(8, 16, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2)),
                nn.Sequential(nn.Conv1d(16, 16, 3, padding=1), nn.ReLU()),
            ])
            self.exits = nn.ModuleList([
                nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 4)),
                None,  # no early exit after block 2
                nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(16, 4)),
            ])


    def build():
        model = Signal1D()
        model.load_state_dict(torch.load(HERE / "signal1d.pt", weights_only=True))
        return model.eval()


    def load():
        """Four classes of noisy sinusoids (frequency = class), two channels."""
        rng = np.random.default_rng(7)
        out = {}
        for split, n in (("train", 800), ("val", 300), ("test", 300)):
            labels = rng.integers(4, size=n)
            t = np.arange(64) / 64.0
            phase = rng.uniform(0, 2 * np.pi, (n, 1))
            base = np.sin(2 * np.pi * (labels[:, None] + 1) * 2 * t + phase)
            x = np.stack([base, np.cos(2 * np.pi * (labels[:, None] + 1) * 2 * t + phase)], 1)
            x = x + rng.normal(0, 0.6, x.shape)
            out[split] = (x.astype(np.float32), labels)
        return out
    '''
)


def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """The model file, its trained weights, its profile and a scenario naming them."""
    import torch

    from profiles.multiexit import load_callable

    folder = tmp_path_factory.mktemp("own")
    (folder / "signal1d.py").write_text(MODEL_FILE)
    module_ref = str(folder / "signal1d.py")
    data = load_callable(f"{module_ref}:load")()
    torch.manual_seed(0)
    model = load_callable(f"{module_ref}:Signal1D")()
    x, y = (torch.from_numpy(a) for a in data["train"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        h, loss = x, 0.0
        for block, exit_head in zip(model.blocks, model.exits, strict=True):
            h = block(h)
            if exit_head is not None:
                loss = loss + torch.nn.functional.cross_entropy(exit_head(h), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(model.state_dict(), folder / "signal1d.pt")
    proc = subprocess.run(
        [sys.executable, "-m", "profiles.profile", "--model", "signal1d.py:build", "--data",
         "signal1d.py:load", "--out", str(folder / "signal1d.npz"), "--repeats", "20",
         "--leak-train", "200", "--leak-epochs", "1"],
        cwd=folder, capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    scenario = folder / "signal1d.toml"
    scenario.write_text(
        (ROOT / "envs" / "default_scenario.toml")
        .read_text()
        .replace(
            'profile = "builtin"',
            'profile = "signal1d.npz"\nmodel = "signal1d.py:build"\ndata = "signal1d.py:load"',
        )
    )
    cfg = folder / "tiny.toml"
    cfg.write_text(TINY_HYPERPARAMS)
    return folder, scenario, cfg


def test_the_profile_follows_the_model(own):
    from profiles.profile_io import load_profile

    folder, _, _ = own
    profile = load_profile(folder / "signal1d.npz")
    assert profile.n_blocks == 3 and profile.n_classes == 4
    assert profile.input_shape == (2, 64) and profile.input_kind == "tensor"
    assert profile.has_exit == (True, False, True)
    assert profile.activation_shapes == [(2, 64), (8, 32), (16, 16), (16, 16)]
    assert profile.codecs_by_cut[0] == ["fp32", "fp16", "int8", "int8+zlib", "int4+zlib"]
    assert np.isnan(profile.leakage).all() and "not images" in profile.meta["leakage_reason"]
    test = profile.splits["test"]
    assert test.exit_correct[-1].mean() > 0.5  # it learnt something
    assert not test.exit_correct[1].any() and (test.exit_conf[1] == 0).all()
    summary = json.loads(
        run("-m", "profiles", "show", str(folder / "signal1d.npz"), "--json").stdout
    )
    assert summary["n_blocks"] == 3 and [e["block"] for e in summary["exits"]] == [1, 3]
    assert summary["cuts"][0]["leakage"] is None and summary["leakage_reason"]


def test_the_environment_follows_the_profile(own):
    from gymnasium.utils.env_checker import check_env

    from envs import OffloadEnv
    from sim import load_scenario

    _, scenario, _ = own
    env = OffloadEnv(load_scenario(scenario), trace_source="builtin", episode_requests=50)
    assert list(env.action_space.nvec) == [4, 7, 5]
    check_env(env, skip_render_check=True)
    env.reset(seed=0)
    exits = set()
    for _ in range(50):
        *_, info = env.step(np.array([3, 0, 0]))  # all local, exits at 0.5
        exits.add(info["exit_block"])
    assert exits <= {1, 3} and 2 not in exits  # block 2 has no exit


def test_train_export_serve_and_answer_like_the_model(own, tmp_path):
    import torch

    from agents.base import FixedPolicy
    from profiles.multiexit import build_model, load_data, tail
    from runtime_hooks.device_loop import DeviceLoop
    from runtime_hooks.sim2real import start_server, stop_server

    folder, scenario, cfg = own
    runs = tmp_path / "runs"
    out = run("train.py", "--scenario", str(scenario), "--name", "sig", "--runs-dir", str(runs),
              "--config", str(cfg), "--timesteps", "1024", "--trace-source", "builtin",
              "--no-progress")  # fmt: skip
    assert out.returncode == 0, out.stderr
    policy = tmp_path / "policy.npz"
    out = run("-m", "runtime_hooks.export", str(runs / "sig"), "--out", str(policy), "--check",
              "300")  # fmt: skip
    # exit 0: every decision as SB3's, or a tie of two logits within float32 rounding
    assert out.returncode == 0 and "% of 300" in out.stdout, out.stdout + out.stderr
    proc, address = start_server("--scenario", str(scenario))
    try:
        summary = tmp_path / "device.json"
        out = run("-m", "runtime_hooks.device", "--scenario", str(scenario), "--server",
                  f"{address[0]}:{address[1]}", "--policy", str(policy), "--requests", "20",
                  "--rate", "0", "--host-speed", "--json", str(summary), "--log",
                  str(tmp_path / "log.jsonl"))  # fmt: skip
        assert out.returncode == 0, out.stderr
        result = json.loads(summary.read_text())
        assert result["answered"] == 20 and result["lost"] == 0
        # Lossless offloading at each cut answers exactly as the model itself does.
        model, spec = build_model(f"{folder / 'signal1d.py'}:build")
        test = load_data(f"{folder / 'signal1d.py'}:load", spec)["test"]
        with torch.inference_mode():
            expected = tail(model, 0, torch.from_numpy(test.inputs[:12])).argmax(1).numpy()
        for cut in (0, 1, 2):
            loop = DeviceLoop.create(address, FixedPolicy(cut, 6, 0), scenario,
                                     battery_sensor=None, emulate_device=False)  # fmt: skip
            results = loop.run(test.inputs[:12], test.labels[:12], progress=False)
            loop.close()
            assert [r.path for r in results] == ["cloud"] * 12, cut
            assert [r.prediction for r in results] == expected.tolist(), cut
    finally:
        stop_server(proc)


def test_a_server_refuses_a_profile_of_another_model(own):
    _, scenario, _ = own
    weights = ROOT / "profiles" / "data" / "multiexit_fmnist.pt"
    out = run("-m", "runtime_hooks.server", "--scenario", str(scenario), "--weights", str(weights))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "signal1d.npz" in out.stderr and "measured on another model" in out.stderr


def test_the_shipped_policy_is_refused_for_another_model(own):
    from runtime_hooks.device_loop import DeviceLoop
    from runtime_hooks.policy_file import PolicyFileError

    _, scenario, _ = own
    with pytest.raises(PolicyFileError, match="trained on a profile of model c66085625bb287aa"):
        DeviceLoop.create(None, None, scenario, battery_sensor=None)


BAD_MODELS = {
    "missing.py:build": "not found",
    "os:nothing_here": "has no function 'nothing_here'",
    "no_such_module_xyz:build": "does not import",
    "bad.py:no_blocks": "has no 'blocks'",
    "bad.py:mismatched": "'blocks' has 3 entries but 'exits' has 2",
    "bad.py:training": "eval mode",
    "bad.py:no_shape": "'input_shape' must be",
}
BAD_FILE = textwrap.dedent(
    """
    import numpy as np
    from torch import nn

    SPLITS = ("train", "val", "test")


    def _net(k, exits):
        net = nn.Module()
        net.blocks = nn.ModuleList([nn.Linear(4, 4) for _ in range(k)])
        net.exits = nn.ModuleList([nn.Linear(4, 3) for _ in range(exits)])
        net.input_shape = (4,)
        return net.eval()


    def no_blocks():
        return nn.Linear(4, 3).eval()


    def mismatched():
        return _net(3, 2)


    def training():
        return _net(2, 2).train()


    def no_shape():
        net = _net(2, 2)
        net.input_shape = None
        return net


    def good():
        return _net(2, 2)


    def wrong_shape():
        return {s: (np.zeros((5, 3), np.float32), np.zeros(5, int)) for s in SPLITS}


    def wrong_labels():
        return {s: (np.zeros((5, 4), np.float32), np.full(5, 7)) for s in SPLITS}
    """
)


@pytest.mark.parametrize("ref, message", BAD_MODELS.items())
def test_a_bad_model_is_one_line_naming_it(tmp_path, ref, message):
    (tmp_path / "bad.py").write_text(BAD_FILE)
    proc = subprocess.run(
        [sys.executable, "-m", "profiles.profile", "--model", ref, "--out",
         str(tmp_path / "p.npz")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert ref in proc.stderr and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "ref, message",
    [
        ("bad.py:wrong_shape", "inputs have shape (5, 3), the model's input_shape (4,)"),
        ("bad.py:wrong_labels", "labels span 7..7, the model has 3 classes"),
    ],
)
def test_bad_data_is_one_line_naming_it(tmp_path, ref, message):
    (tmp_path / "bad.py").write_text(BAD_FILE)
    proc = subprocess.run(
        [sys.executable, "-m", "profiles.profile", "--model", "bad.py:good", "--data", ref,
         "--out", str(tmp_path / "p.npz")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert ref in proc.stderr and message in proc.stderr


def test_a_device_measured_with_the_model_replaces_flop_scaling(own, tmp_path):
    from profiles.catalog import CatalogError
    from sim import System, load_scenario

    folder, scenario, _ = own
    catalog = tmp_path / "device.toml"
    proc = subprocess.run(
        [sys.executable, "-m", "profiles.measure_device", "--model", "signal1d.py:build",
         "--data", "signal1d.py:load", "--name", "bench-host", "--out", str(catalog),
         "--repeats", "5", "--power-from", "rpizero"],
        cwd=folder, capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = catalog.read_text()
    assert "[devices.bench-host]" in text and "[radios.lte]" in text  # a whole catalog
    measured = load_scenario(scenario).with_updates(catalog=str(catalog), device="bench-host")
    system = System(measured)
    device = system.catalog.device("bench-host")
    assert system.block_dev_s == list(device.block_s) and len(device.block_s) == 3
    assert device.exit_s[1] == 0.0  # block 2 has no exit
    assert device.active_power_w == system.catalog.device("rpizero").active_power_w
    assert "not measured" in device.description
    builtin = load_scenario().with_updates(catalog=str(catalog), device="bench-host")
    with pytest.raises(CatalogError, match="measured on model .* the profile .* is of model"):
        System(builtin)


# -- learned bottlenecks ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def own_bottleneck(own, tmp_path_factory):
    """A learned bottleneck after block 1 of the 1-D model (2 channels, 4 bits), trained
    briefly, and a copy of the model's profile with it as a level of cut 1."""
    from profiles import bottleneck as B
    from profiles.bottleneck_profile import add_bottlenecks
    from profiles.multiexit import build_model, load_data

    folder, scenario, _ = own
    model, spec = build_model(f"{folder / 'signal1d.py'}:build")
    splits = load_data(f"{folder / 'signal1d.py'}:load", spec)
    rate = B.Rate(1, 2, 4)
    bottleneck, meta = B.train(model, spec, splits, rate, epochs=3, seed=0)
    out = tmp_path_factory.mktemp("bottlenecks")
    B.save(bottleneck, B.path_for(out, rate), spec.model_hash, meta)
    profile = folder / "signal1d_bottleneck.npz"
    add_bottlenecks(folder / "signal1d.npz", out, profile, n_train=100, epochs=1, repeats=3)
    with_bottleneck = folder / "signal1d_bottleneck.toml"
    with_bottleneck.write_text(
        scenario.read_text().replace("signal1d.npz", "signal1d_bottleneck.npz")
    )
    return model, spec, splits, bottleneck, out, with_bottleneck


def test_a_bottleneck_is_a_level_of_its_cut_only(own_bottleneck):
    from envs import OffloadEnv
    from envs.wrappers import env_actions
    from sim import load_scenario

    *_, scenario = own_bottleneck
    env = OffloadEnv(load_scenario(scenario), trace_source="builtin", episode_requests=20)
    s = env.system
    assert s.levels_by_cut == [5, 6, 5] and list(env.action_space.nvec) == [4, 7, 6]
    assert s.profile.codec_name(1, 5) == "bottleneck-c2"
    entry = s.profile.bottleneck_at(1, 5)
    assert entry["latent_shape"] == [2, 16] and entry["wire"] == "latent4"
    actions = env_actions(env)
    assert (1, 0, 5) in actions and not any(a[2] == 5 and a[0] != 1 for a in actions)
    env.reset(seed=0)
    assert env.check_action(np.array([0, 6, 5])) == (0, 6, 4, 0)  # cut 0's last level
    *_, info = env.step(np.array([1, 6, 5]))
    assert info["offloaded"] and info["sent_bytes"] == s.sent[1][5][env.state.samples[0]]


def test_the_cloud_answers_a_bottleneck_request_as_the_bottleneck_does(own_bottleneck):
    import torch

    from agents.base import FixedPolicy
    from profiles import codecs
    from profiles.multiexit import head, to_model_input
    from runtime_hooks import protocol as P
    from runtime_hooks.device_loop import DeviceLoop
    from runtime_hooks.sim2real import start_server, stop_server

    model, spec, splits, bottleneck, _, scenario = own_bottleneck
    test = splits["test"]
    x = torch.from_numpy(to_model_input(test.inputs[:10]))
    with torch.inference_mode():
        latents = bottleneck.encode(head(model, 1, x)).numpy()
        received = np.stack([codecs.decode(codecs.encode("latent4", z)) for z in latents])
        expected = bottleneck.decode(torch.from_numpy(received)).argmax(1).numpy()
    proc, address = start_server("--scenario", str(scenario))
    try:
        loop = DeviceLoop.create(address, FixedPolicy(1, 6, 5), scenario, battery_sensor=None,
                                 emulate_device=False)  # fmt: skip
        results = loop.run(test.inputs[:10], test.labels[:10], progress=False)
        loop.close()
        assert [r.path for r in results] == ["cloud"] * 10
        assert [r.prediction for r in results] == expected.tolist()
        # A latent of the wrong shape, of another codec, or corrupt: error frames.
        import socket

        with socket.create_connection(address, timeout=5) as sock:
            reader = P.handshake(sock, loop.link.model_hash)
            bad_shape = codecs.encode("latent4", np.zeros((2, 8), np.float32))
            sock.sendall(P.request_frame(1, 1, 5, "latent4", (2, 8), bad_shape))
            header, body = reader.read(5)
            assert header.kind == P.ERROR and b"latent of bottleneck-c2 at cut 1" in body
            fp32 = codecs.encode("fp32", np.zeros((2, 16), np.float32))
            sock.sendall(P.request_frame(2, 1, 5, "fp32", (2, 16), fp32))
            header, body = reader.read(5)
            assert header.kind == P.ERROR and b"dtype" in body
            blob = bytearray(codecs.encode("latent4", np.full((2, 16), 0.5, np.float32)))
            blob[-3:] = b"\xff\xff\xff"
            blob[codecs.HEADER_SIZE - 8 : codecs.HEADER_SIZE - 4] = np.float32(1.0).tobytes()
            sock.sendall(P.request_frame(3, 1, 5, "latent4", (2, 16), bytes(blob)))
            header, body = reader.read(5)
            assert header.kind == P.ERROR and b"payload" in body
            sock.sendall(P.ping_frame(4))
            assert reader.read(5)[0].kind == P.PONG  # and the connection lives on
    finally:
        stop_server(proc)


def test_a_bottleneck_of_another_model_or_rate_is_refused(own_bottleneck):
    from profiles import bottleneck as B
    from profiles.multiexit import build_model

    model, spec, _, _, folder, _ = own_bottleneck
    path = B.path_for(folder, B.Rate(1, 2, 4))
    with pytest.raises(B.BottleneckError, match="holds bottleneck-c2 at cut 1, not bottleneck-c4"):
        B.load(path, model, spec, B.Rate(1, 4, 4))
    builtin, builtin_spec = build_model("profiles.model:build")
    with pytest.raises(B.BottleneckError, match="made for model .* this model is c66085625bb287aa"):
        B.load(path, builtin, builtin_spec)
    broken = folder / "broken.pt"
    broken.write_bytes(b"not torch")
    with pytest.raises(B.BottleneckError, match="broken.pt: not a readable bottleneck file"):
        B.load(broken, model, spec)


def test_the_guides_model_and_its_training_run_as_written(tmp_path, monkeypatch):
    """docs/own_model.md's signal1d.py and train_signal1d.py, copied from the page: the
    training writes the weights beside the model file, and build() finds them from
    another working folder."""
    import re

    from profiles.multiexit import build_model

    page = (ROOT / "docs" / "own_model.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    files = {b.splitlines()[0].split()[1].rstrip(":"): b for b in blocks if b.startswith("# ")}
    for name in ("signal1d.py", "train_signal1d.py"):
        (tmp_path / name).write_text(files[name])
    out = run(str(tmp_path / "train_signal1d.py"), timeout=300)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "signal1d.pt").is_file()
    monkeypatch.chdir(ROOT)  # not the model's folder
    _, spec = build_model(f"{tmp_path / 'signal1d.py'}:build")
    assert spec.n_blocks == 3 and spec.has_exit == (True, False, True)
