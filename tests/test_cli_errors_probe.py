"""Hostile input found by the second probe of issue 29 (its items 3, 4, 5, 9, 10, 12,
13, 19, 23, 33, 34, 35, 38, 39, 40 and 44): each case is refused with one ``error: ...``
line naming the flag, file or value at fault and what would be accepted (exit 2), before
any work starts and without touching a file it was not asked to replace.

The commands run in this process (``main(argv)``); the work they would start is
replaced by a tripwire that fails the test if it is reached."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import refused, tripwire

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "profiles" / "catalog.toml"
RUN = ROOT / "runs" / "default"


@pytest.fixture
def run_copy(tmp_path) -> Path:
    """A copy of the shipped training run (its files and their record)."""
    return Path(shutil.copytree(RUN, tmp_path / "run"))


def not_npz(folder: Path) -> Path:
    path = folder / "junk.npz"
    path.write_text("not an archive\n")
    return path


def other_npz(folder: Path) -> Path:
    """A real .npz archive that is neither a profile nor weights."""
    path = folder / "other.npz"
    np.savez(path, a=np.zeros(3))
    return path


# -- 3: measure_device replacing a catalog's entry ---------------------------------------
def test_measure_device_refuses_a_name_already_in_the_catalog(tmp_path, capsys, monkeypatch):
    from profiles import measure_device

    monkeypatch.setattr(measure_device, "measure", tripwire)
    out = Path(shutil.copy(CATALOG, tmp_path / "catalog.toml"))
    before = out.read_text()
    argv = ["--model", "profiles.model:build", "--name", "mcu", "--out", str(out)]
    refused(
        measure_device.main,
        argv,
        capsys,
        "--name mcu",
        "[devices.mcu] already in",
        str(out),
        "pick another --name or --out",
        "--replace",
    )
    assert out.read_text() == before
    argv = [
        "--model",
        "profiles.model:build",
        "--name",
        "new",
        "--out",
        str(out),
        "--power-from",
        "nope",
    ]
    refused(measure_device.main, argv, capsys, "--power-from", "no [devices.nope]")


def test_measure_device_replaces_an_entry_when_asked(tmp_path, capsys, monkeypatch):
    from profiles import measure_device
    from profiles.catalog import load_catalog

    fields = {
        "description": "measured here",
        "gflops": 1.5,
        "active_power_w": 1.0,
        "idle_power_w": 0.5,
        "battery_j": 100.0,
        "model_hash": "0123456789abcdef",
        "measured_on": "this host",
        "block_s": [0.001],
        "exit_s": [0.0001],
        "encode_s": [[0.0001]],
    }
    monkeypatch.setattr(measure_device, "measure", lambda args: fields)
    out = Path(shutil.copy(CATALOG, tmp_path / "catalog.toml"))
    argv = ["--model", "profiles.model:build", "--name", "mcu", "--out", str(out), "--replace"]
    assert measure_device.main(argv) == 0, capsys.readouterr().err
    assert load_catalog(out).device("mcu").description == "measured here"


# -- 4, 35: the profiler's --out -----------------------------------------------------------
@pytest.fixture
def no_profiling(monkeypatch):
    from profiles import profile

    monkeypatch.setattr(profile, "run", tripwire)
    monkeypatch.setattr(profile, "remeasure_latency", tripwire)
    return profile


def test_profile_out_must_be_an_npz_outside_a_run(no_profiling, run_copy, capsys):
    main = no_profiling.main
    before = (run_copy / "eval_curve.csv").read_bytes()
    refused(
        main,
        ["--quick", "--out", str(run_copy / "eval_curve.csv")],
        capsys,
        "--out",
        "must name a .npz file",
        "eval_curve.csv",
    )
    assert (run_copy / "eval_curve.csv").read_bytes() == before
    assert not (run_copy / "eval_curve.csv.npz").exists()
    refused(main, ["--quick", "--out", str(run_copy / "p.npz")], capsys, "--out", str(run_copy))
    refused(main, ["--latency-only", "--out", str(run_copy / "policy.npz")], capsys, "--out")


def test_profile_out_refuses_a_file_that_is_not_a_profile(no_profiling, tmp_path, capsys):
    for path in (not_npz(tmp_path), other_npz(tmp_path)):
        before = path.read_bytes()
        refused(
            no_profiling.main,
            ["--quick", "--out", str(path)],
            capsys,
            "--out",
            str(path),
            "not a profile",
        )
        assert path.read_bytes() == before


def test_profile_quick_never_replaces_a_shipped_profile(no_profiling, capsys):
    from profiles import DEFAULT_PROFILE

    refused(no_profiling.main, ["--quick"], capsys, "--quick", str(DEFAULT_PROFILE), "never")


def test_profile_latency_only_needs_an_existing_profile(no_profiling, tmp_path, capsys):
    nope = tmp_path / "nope.npz"
    err = refused(no_profiling.main, ["--latency-only", "--out", str(nope)], capsys)
    assert f"--latency-only re-times an existing profile; --out {nope} does not exist" in err


def test_profile_out_accepts_a_new_npz_and_an_existing_profile(no_profiling, tmp_path):
    from profiles import DEFAULT_PROFILE

    assert no_profiling.profile_out(tmp_path / "new.npz") == tmp_path / "new.npz"
    existing = Path(shutil.copy(DEFAULT_PROFILE, tmp_path / "p.npz"))
    assert no_profiling.profile_out(existing) == existing


# -- 5: a bad SPLITCTL_MAX_TRACE_MB is one error, not a skipped file each ------------------
@pytest.mark.parametrize("value", ["abc", "0", "-5", "inf", "nan"])
def test_a_bad_trace_size_limit_stops_loading_once(value, monkeypatch, tmp_path):
    from settings.tables import InputError
    from traces import loaders
    from traces.trace import TraceError

    monkeypatch.setenv("SPLITCTL_MAX_TRACE_MB", value)
    monkeypatch.setattr(loaders, "load_trace", tripwire)
    (tmp_path / "a.log").write_text("0 1\n1 2\n")
    with pytest.raises(InputError) as caught:
        loaders.load_dir(tmp_path)
    assert not isinstance(caught.value, TraceError)  # load_dir must not skip it per file
    assert str(caught.value) == (
        f"SPLITCTL_MAX_TRACE_MB={value!r}: expected a size in MiB (e.g. 32)"
    )


def test_a_good_trace_size_limit_applies(monkeypatch, tmp_path):
    from traces import loaders

    monkeypatch.setenv("SPLITCTL_MAX_TRACE_MB", "0.000001")
    (tmp_path / "a.log").write_text("0 1\n1 2\n")
    report = loaders.load_dir(tmp_path)
    assert not report.traces and "over the" in report.errors[0]


# -- 9, 10: check_bundle --run and --observations ------------------------------------------
@pytest.fixture
def bundle(tmp_path) -> Path:
    """A bundle whose manifest lists no files: it passes the file check."""
    from runtime_hooks.bundle import FORMAT, MANIFEST

    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / MANIFEST).write_text(json.dumps({"format": FORMAT, "files": {}}))
    return folder


@pytest.mark.parametrize(
    "value, says",
    [("0", "must be >= 1, got 0"), ("-5", ">= 1, got -5"), ("1000001", "at most 1,000,000")],
)
def test_check_bundle_bounds_observations(bundle, value, says, capsys, monkeypatch):
    from runtime_hooks import check_bundle

    monkeypatch.setattr(check_bundle, "check_against_run", tripwire)
    monkeypatch.setattr(check_bundle, "check_bundle", tripwire)
    argv = [str(bundle), "--run", str(RUN), "--observations", value]
    refused(check_bundle.main, argv, capsys, "--observations", says)


def test_check_bundle_says_what_is_wrong_with_the_run(bundle, tmp_path, capsys, monkeypatch):
    from agents.run_files import RunFilesError
    from runtime_hooks import check_bundle, export

    missing = tmp_path / "missing"
    refused(
        check_bundle.main, [str(bundle), "--run", str(missing)], capsys, str(missing), "not found"
    )
    fleet = ROOT / "runs" / "fleet"
    refused(check_bundle.main, [str(bundle), "--run", str(fleet)], capsys, str(fleet), "fleet")

    def changed(*_args, **_kwargs):
        raise RunFilesError(f"{RUN}/model.zip: its SHA-256 differs")

    monkeypatch.setattr(export, "export_run", changed)
    refused(check_bundle.main, [str(bundle), "--run", str(RUN)], capsys, "SHA-256 differs")


# -- 12: profiles plot --out ---------------------------------------------------------------
def test_plot_out_is_checked_before_the_profile_is_read(tmp_path, capsys, monkeypatch):
    from profiles import __main__ as cli
    from profiles import plots

    monkeypatch.setattr(cli, "load_profile", tripwire)
    monkeypatch.setattr(plots, "codec_tradeoff", tripwire)
    afile = tmp_path / "afile"
    afile.write_text("x")
    refused(
        cli.main,
        ["plot", "--out", str(afile / "x.png")],
        capsys,
        "--out",
        str(afile),
        "cannot be created",
    )
    folder = tmp_path / "folder"
    folder.mkdir()
    refused(cli.main, ["plot", "--out", str(folder)], capsys, "--out", ".png", str(folder))
    refused(cli.main, ["plot", "--out", str(tmp_path / "x.pdf")], capsys, "--out", ".png")
    assert not (tmp_path / "folder.png").exists()


# -- 13: measure_cloud's limits ------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, says",
    [
        (["--batch-sizes", "1,100000000"], "at most 4,096 (the largest [capacity].max_batch"),
        (["--repeats", "1000000000"], "at most 1,000 (every cut at every batch size"),
        (["--batch-sizes", "2,4"], "must rise from 1"),
        (["--batch-sizes", "1,x"], "'x'"),
    ],
)
def test_measure_cloud_bounds_its_work(argv, says, tmp_path, capsys, monkeypatch):
    from runtime_hooks import measure_cloud

    monkeypatch.setattr(measure_cloud, "measure", tripwire)
    refused(measure_cloud.main, [*argv, "--out", str(tmp_path / "b.json")], capsys, argv[0], says)


# -- 19, 33: a file that is not a profile --------------------------------------------------
def test_show_says_a_file_is_not_an_npz_or_not_a_profile(tmp_path, capsys):
    from profiles.__main__ import main

    junk = not_npz(tmp_path)
    err = refused(main, ["show", str(junk)], capsys)
    assert err == (
        f"error: {junk}: not a readable profile file: not a .npz archive "
        "(python -m profiles.profile / runtime_hooks.export write one)\n"
    )
    assert "allow_pickle" not in err and "pickle.load" not in err
    other = other_npz(tmp_path)
    refused(
        main,
        ["show", str(other)],
        capsys,
        str(other),
        "not a profile (made by python -m profiles.profile)",
    )
    refused(main, ["show", str(RUN / "policy.npz")], capsys, "not a profile")


def test_a_policy_file_that_is_not_an_npz_says_so(tmp_path):
    from runtime_hooks.policy_file import NumpyPolicy, PolicyFileError

    junk = not_npz(tmp_path)
    with pytest.raises(PolicyFileError) as caught:
        NumpyPolicy.load(junk)
    assert "not a .npz archive" in str(caught.value) and "pickle" not in str(caught.value)


# -- 34: weights of another kind -----------------------------------------------------------
def test_weights_of_another_kind_say_whose_weights_are_expected(tmp_path):
    from profiles.model import WeightsError, load_model

    cases = {
        not_npz(tmp_path): "not a readable weights file of profiles.train_model",
        other_npz(tmp_path): "not a readable weights file of profiles.train_model",
        ROOT / "profiles" / "data" / "mobilenet_fmnist.pt": (
            "not a weights file of profiles.train_model (its format is 'splitctl-state-v1'"
        ),
    }
    for path, says in cases.items():
        with pytest.raises(WeightsError) as caught:
            load_model(path)
        assert str(caught.value).startswith(f"{path}: {says}"), caught.value
        assert "KeyError" not in str(caught.value) and "enforce" not in str(caught.value)


# -- 23, 38: trace files -------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, says",
    [
        ("0 1\n1 1e308\n", ":2: 1e308 Mbit/s is above 1 Tbit/s"),
        ("0 1\n1 2000000\n", ":2: 2000000 Mbit/s is above 1 Tbit/s"),
        ("0 1e-300\n1 1e-300\n", ": mean capacity below 1 bit/s"),
        (
            "time,mbps\n0,1\n",
            ":1: expected 2 columns separated by whitespace (time_s Mbit/s), got 'time,mbps'",
        ),
        ("0,1\n1,2\n", ":1: expected 2 columns separated by whitespace (time_s Mbit/s), got '0,1'"),
    ],
)
def test_a_two_column_trace_error_names_the_path_and_line(text, says, tmp_path):
    from traces import TraceError, load_trace

    path = tmp_path / "trace.log"
    path.write_text(text)
    with pytest.raises(TraceError) as caught:
        load_trace(path)
    assert str(caught.value).startswith(f"{path}{says}"), caught.value


def test_a_5g_trace_rate_past_1_tbit_names_the_line(tmp_path):
    from traces import TraceError, load_trace

    path = tmp_path / "g.csv"
    path.write_text("Timestamp,DL_bitrate\n2020.01.01_00.00.00,5\n2020.01.01_00.00.01,1e300\n")
    with pytest.raises(TraceError, match=r"g\.csv:3: DL_bitrate 1e300 kbit/s is above 1 Tbit/s"):
        load_trace(path)


def test_a_trace_made_in_python_still_names_itself():
    from traces import Trace, TraceError

    with pytest.raises(TraceError, match=r"^trace 'x': rates must be finite and >= 0$"):
        Trace("x", "custom", (0.0,), (float("inf"),), 1.0)


# -- 39, 40: agents.run_files --------------------------------------------------------------
def test_run_files_check_exit_codes(run_copy, tmp_path, capsys):
    from agents.run_files import RECORD, main

    assert main([str(run_copy)]) == 0
    capsys.readouterr()
    (run_copy / "model.zip").write_bytes(b"changed")
    assert main([str(run_copy)]) == 1  # a finding of the check
    assert "model.zip" in capsys.readouterr().err
    (run_copy / "model.zip").unlink()
    assert main([str(run_copy)]) == 1
    assert "missing" in capsys.readouterr().err
    (run_copy / RECORD).write_text("{")
    refused(main, [str(run_copy)], capsys, RECORD, "not a readable JSON file")
    (run_copy / RECORD).write_text(json.dumps({"/etc/passwd": "0" * 64}))
    refused(main, [str(run_copy)], capsys, "/etc/passwd", "not a file inside the run")
    (run_copy / RECORD).unlink()
    refused(main, [str(run_copy)], capsys, f"no {RECORD}")
    refused(main, [str(tmp_path / "nope")], capsys, "not found", "training run")


def test_run_files_records_only_a_training_run(bundle, tmp_path, capsys):
    from agents.run_files import RECORD, main

    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (empty, bundle):
        refused(
            main,
            [str(folder), "--record"],
            capsys,
            str(folder),
            "not a training run",
            "config.json",
        )
        assert not (folder / RECORD).exists()


# -- 44: catalog messages ------------------------------------------------------------------
@pytest.mark.parametrize(
    "old, new, says",
    [
        ("gflops = 0.04", "gflops = 0", "[devices.mcu].gflops: 0.0 out of range (must be > 0)"),
        (
            "idle_power_w = 0.00185",
            "idle_power_w = -1.0",
            "[devices.mcu].idle_power_w: -1.0 out of range (must be >= 0)",
        ),
    ],
)
def test_catalog_ranges_read_as_a_person_writes_them(old, new, says, tmp_path):
    from profiles.catalog import CatalogError, load_catalog

    text = CATALOG.read_text()
    assert old in text
    path = tmp_path / "cat.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert str(caught.value) == f"{path}: {says}"
    assert "inf" not in str(caught.value)


def test_catalog_uplink_ratio_range_and_unknown_key(tmp_path):
    from profiles.catalog import CatalogError, load_catalog

    text = CATALOG.read_text()
    path = tmp_path / "cat.toml"
    path.write_text(text.replace("uplink_ratio = ", "uplink_ratio = 1.5 #", 1))
    with pytest.raises(
        CatalogError, match=r"uplink_ratio: 1\.5 out of range \(must be in \(0, 1\]\)"
    ):
        load_catalog(path)
    path.write_text("foo = 1\n" + text)
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert str(caught.value).startswith(f"{path}: unknown key 'foo'")
