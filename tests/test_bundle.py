"""The device bundle: the controller in C (``runtime_hooks.c_policy``, compiled with
the system's C compiler) and in ONNX (``runtime_hooks.onnx_policy``, run by
onnxruntime) make the numpy policy's decisions on observations of Offload-v0's test
split, the C observation builder makes the Python one's observations on a recorded
sequence of measurements, and the manifest's hashes catch a changed file."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from runtime_hooks.c_policy import write_c_policy
from runtime_hooks.policy_file import NumpyPolicy
from telemetry.observation import N_CONTEXT, N_TPUT_SAMPLES, OBS_DIM, Telemetry, build_observation

ROOT = Path(__file__).resolve().parent.parent
COMPILER = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


class CTelemetry(ctypes.Structure):
    _fields_ = [
        ("sample_times", ctypes.c_double * N_TPUT_SAMPLES),
        ("sample_logs", ctypes.c_double * N_TPUT_SAMPLES),
        ("sample_inverses", ctypes.c_double * N_TPUT_SAMPLES),
        ("n_samples", ctypes.c_int),
        ("estimate_bps", ctypes.c_double),
        ("rtt_est_s", ctypes.c_double),
        ("battery_level", ctypes.c_double),
        ("last_action", ctypes.c_int * 3),
        ("last_cloud_use_s", ctypes.c_double),
        ("radio_tail_end_s", ctypes.c_double),
    ]


class CContext(ctypes.Structure):
    _fields_ = [("values", ctypes.c_double * N_CONTEXT)]


@pytest.fixture(scope="module")
def shipped():
    return NumpyPolicy.load(ROOT / "runs" / "default" / "policy.npz")


@pytest.fixture(scope="module")
def sources(shipped, tmp_path_factory):
    return write_c_policy(shipped, tmp_path_factory.mktemp("c_policy"))[1:]


@pytest.fixture(scope="module")
def library(sources):
    return _compiled(sources[0])


@pytest.fixture(scope="module")
def library_int8(sources):
    return _compiled(sources[1])


def _compiled(source: Path):
    if COMPILER is None:
        pytest.skip("no C compiler (cc, gcc or clang) on this machine")
    lib = source.with_suffix(".so")
    flags = ["-std=c99", "-O2", "-Wall", "-Wextra", "-pedantic", "-Werror", "-shared", "-fPIC"]
    subprocess.run([COMPILER, *flags, str(source), "-lm", "-o", str(lib)], check=True)
    c = ctypes.CDLL(str(lib))
    c.splitctl_decide.argtypes = [ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int)]
    c.splitctl_init.argtypes = [ctypes.POINTER(CTelemetry), ctypes.c_double]
    c.splitctl_record_transfer.argtypes = [ctypes.POINTER(CTelemetry)] + [ctypes.c_double] * 3
    c.splitctl_record_rtt.argtypes = [ctypes.POINTER(CTelemetry), ctypes.c_double]
    c.splitctl_observe.argtypes = [
        ctypes.POINTER(CTelemetry),
        ctypes.POINTER(CContext),
        ctypes.c_double,
        ctypes.c_double,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_float),
    ]
    return c


def _decide(library, observation: np.ndarray) -> tuple[int, int, int]:
    obs = np.ascontiguousarray(observation, dtype=np.float32)
    action = (ctypes.c_int * 3)()
    library.splitctl_decide(obs.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), action)
    return tuple(action)


@pytest.fixture(scope="module")
def test_observations():
    from envs import OffloadEnv
    from runtime_hooks.export import env_observations

    env = OffloadEnv(trace_source="builtin", trace_split="test", sample_split="test")
    return env_observations(env, 10_000, seed=3)


def test_the_c_policy_decides_as_the_numpy_policy_on_10000_test_observations(
    library, shipped, test_observations
):
    same = sum(_decide(library, o) == tuple(shipped.act(o)) for o in test_observations)
    assert same / len(test_observations) >= 0.999, f"{same} of {len(test_observations)} agree"


def test_the_onnx_policy_decides_as_the_numpy_policy(shipped, test_observations, tmp_path):
    from runtime_hooks.onnx_policy import OnnxPolicy, write_onnx_policy

    onnx = OnnxPolicy(write_onnx_policy(shipped, tmp_path / "policy.onnx"))
    got = onnx.act_all(test_observations)
    want = np.stack([shipped.act(o) for o in test_observations])
    assert got.shape == (len(test_observations), 3) and got.dtype == np.int64
    agree = (got == want).all(axis=1).mean()
    assert agree >= 0.999, f"{agree:.2%} agree"
    assert tuple(onnx.act(test_observations[0])) == tuple(want[0])


def test_the_int8_c_policy_agrees_on_99_percent_and_fits_in_64_kb(
    library_int8, sources, shipped, test_observations
):
    same = sum(_decide(library_int8, o) == tuple(shipped.act(o)) for o in test_observations)
    assert same / len(test_observations) >= 0.99, f"{same} of {len(test_observations)} agree"
    obj = sources[1].with_suffix(".o")
    subprocess.run([COMPILER, "-std=c99", "-O2", "-c", str(sources[1]), "-o", str(obj)], check=True)
    size = shutil.which("size")
    if size is None:
        pytest.skip("no size(1) to measure the object with")
    text, data = (
        subprocess.run([size, str(obj)], capture_output=True, text=True, check=True)
        .stdout.splitlines()[1]
        .split()[:2]
    )
    assert int(text) + int(data) <= 64 * 1024, f"text {text} + data {data} bytes"


def test_the_c_observation_builder_equals_the_python_one(library, shipped):
    rng = np.random.default_rng(0)
    radios = sorted(shipped.meta.radios)
    contexts = (CContext * len(radios)).in_dll(library, "SPLITCTL_CONTEXTS")
    from telemetry.observation import ObservationContext

    m = shipped.meta
    for r, name in enumerate(radios):
        tail_s, tail_w = m.radios[name]
        ctx = ObservationContext(m.deadline_s, *m.nvec, tail_s, tail_w, m.keep_alive_s)
        c_tel, py_tel = CTelemetry(), Telemetry(rtt_est_s=0.08)
        library.splitctl_init(ctypes.byref(c_tel), 0.08)
        now = 0.0
        for step in range(300):  # a recorded sequence of what a device measures
            now += float(rng.exponential(0.5))
            if rng.random() < 0.6:
                nbytes, seconds = (
                    float(rng.choice([0.0, 82.0, 383.0, 2e4])),
                    float(rng.exponential(0.2)),
                )
                py_tel.record_transfer(now, nbytes, seconds)
                library.splitctl_record_transfer(ctypes.byref(c_tel), now, nbytes, seconds)
            if rng.random() < 0.5:
                rtt = float(rng.uniform(0.01, 0.5))
                py_tel.record_rtt(rtt)
                library.splitctl_record_rtt(ctypes.byref(c_tel), rtt)
            action = tuple(int(v) for v in rng.integers(m.nvec))
            battery = float(rng.uniform(0, 1))
            tail_end, cloud = now + float(rng.uniform(-5, 5)), now - float(rng.exponential(100))
            py_tel.last_action, py_tel.battery_level = action, battery
            py_tel.radio_tail_end_s, py_tel.last_cloud_use_s = tail_end, cloud
            c_tel.last_action[:] = action
            c_tel.battery_level, c_tel.radio_tail_end_s, c_tel.last_cloud_use_s = (
                battery,
                tail_end,
                cloud,
            )
            lateness, queue = float(rng.exponential(0.1)), int(rng.integers(0, 120))
            want = build_observation(py_tel, now, lateness, queue, ctx)
            got = np.zeros(OBS_DIM, dtype=np.float32)
            library.splitctl_observe(
                ctypes.byref(c_tel),
                ctypes.byref(contexts[r]),
                now,
                lateness,
                queue,
                got.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
            )
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"{name}, step {step}")


def test_a_bundle_lists_its_files_by_hash_and_refuses_a_changed_one(shipped, tmp_path):
    from runtime_hooks.bundle import check_bundle, write_bundle
    from runtime_hooks.policy_file import PolicyFileError
    from sim import System, load_scenario

    system = System(load_scenario(None))
    write_bundle(shipped, tmp_path, system=system, scenario_path="envs/default_scenario.toml")
    manifest = check_bundle(tmp_path)
    assert sorted(manifest["files"]) == [
        "policy.c",
        "policy.h",
        "policy.npz",
        "policy.onnx",
        "policy_int8.c",
    ]
    assert (
        manifest["observation"][0] == "tput_last_log10_mbps"
        and len(manifest["observation"]) == OBS_DIM
    )
    assert manifest["model_hash"] == system.profile.model_hash
    assert len(manifest["actions"]["table"]) == len(shipped.table)
    source = tmp_path / "policy.c"
    source.write_text(source.read_text().replace("0.", "1.", 1))
    with pytest.raises(PolicyFileError, match=r"policy\.c: its SHA-256 does not match"):
        check_bundle(tmp_path)
    (tmp_path / "policy.h").unlink()
    with pytest.raises(PolicyFileError, match="policy.h is listed in the manifest but missing"):
        check_bundle(tmp_path)


def test_a_bundle_is_checked_against_the_run_it_came_from(tmp_path):
    from runtime_hooks.check_bundle import check_against_run, main
    from runtime_hooks.export import main as export

    assert (
        export([str(ROOT / "runs" / "default"), "--bundle", str(tmp_path), "--check", "200"]) == 0
    )
    assert check_against_run(tmp_path, ROOT / "runs" / "default", 300).share == 1.0
    assert not check_against_run(tmp_path, ROOT / "runs" / "fleet_single", 300).faithful
    (tmp_path / "policy_int8.c").write_text("/* changed */")
    assert main([str(tmp_path)]) == 2


NO_TORCH_LOOP = """
import json, sys
from profiles.dataset import load_official
from runtime_hooks.device_loop import DeviceLoop
test = load_official("test")
loop = DeviceLoop.create(None, bundle=sys.argv[1], emulate_device=False, battery_sensor=None)
out = [loop.infer(img, int(label))
       for img, label in zip(test.images[:1000], test.labels[:1000], strict=True)]
loop.close()
torch = sorted(name for name in sys.modules if name == "torch" or name.startswith("torch."))
print(json.dumps({"torch": torch, "answers": [[r.path, r.exit_block, r.prediction] for r in out]}))
"""


def test_the_device_loop_runs_a_bundle_without_torch_and_answers_as_torch(tmp_path):
    """The bundle's ONNX head and policy in a process that never imports torch give the
    answers the torch device loop gives on 1,000 test images (no server: every request
    is answered on the device, by an exit or a fallback)."""
    import json
    import sys

    from profiles.dataset import load_official
    from runtime_hooks.device_loop import DeviceLoop
    from runtime_hooks.export import main as export

    assert export([str(ROOT / "runs" / "default"), "--bundle", str(tmp_path), "--check", "10"]) == 0
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH_LOOP, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["torch"] == [], f"the bundle's device loop imported {report['torch']}"
    test = load_official("test")
    loop = DeviceLoop.create(None, emulate_device=False, battery_sensor=None)
    torch_answers = [
        [r.path, r.exit_block, r.prediction]
        for r in (
            loop.infer(img, int(lbl))
            for img, lbl in zip(test.images[:1000], test.labels[:1000], strict=True)
        )
    ]
    loop.close()
    same = sum(a == b for a, b in zip(report["answers"], torch_answers, strict=True))
    assert same >= 999, f"{same} of 1000 answers equal"


def test_the_deploy_guides_main_c_builds_and_runs(sources, tmp_path):
    """docs/deploy.md's example program, built against the generated policy."""
    if COMPILER is None:
        pytest.skip("no C compiler (cc, gcc or clang) on this machine")
    text = (ROOT / "docs" / "deploy.md").read_text()
    example = text.split("```c\n", 1)[1].split("```", 1)[0]
    main_c = sources[0].parent / "main.c"
    main_c.write_text(example)
    program = tmp_path / "main"
    flags = ["-std=c99", "-O2", "-Wall", "-Wextra", "-pedantic", "-Werror"]
    subprocess.run(
        [COMPILER, *flags, str(main_c), str(sources[0]), "-lm", "-o", str(program)], check=True
    )
    out = subprocess.run([str(program)], capture_output=True, text=True, check=True).stdout
    assert out.startswith("cut ") and "threshold" in out and "level" in out
