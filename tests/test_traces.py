import math

import numpy as np
import pytest
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from traces import Trace, TraceError, load_5g_csv, load_dir, load_two_column, split_of
from traces.sets import load_families
from traces.synthetic import generate, load_params


def test_finish_time_on_a_constant_link():
    tr = Trace("c", "x", (0.0,), (8e6,), 10.0)  # 1 MB/s
    assert tr.finish_time(0.0, 1e6) == pytest.approx(1.0)
    assert tr.finish_time(9.5, 1e6) == pytest.approx(10.5)  # wraps around
    assert tr.finish_time(3.0, 25e6) == pytest.approx(28.0)  # several periods


def test_an_outage_delays_the_transfer_exactly():
    # 1 MB/s for 2 s, nothing for 3 s, 1 MB/s for 5 s.
    tr = Trace("o", "x", (0.0, 2.0, 5.0), (8e6, 0.0, 8e6), 10.0)
    assert tr.finish_time(1.0, 0.5e6) == pytest.approx(1.5)
    assert tr.finish_time(1.0, 1.5e6) == pytest.approx(5.5)  # 1 MB before, waits 3 s, 0.5 MB
    assert tr.finish_time(2.5, 1e3) == pytest.approx(5.001)


@settings(max_examples=examples(200), deadline=None)
@given(
    st.lists(st.one_of(st.just(0.0), st.floats(0.001, 50.0)), min_size=1, max_size=12),
    st.floats(0.0, 100.0),
    st.floats(1.0, 1e7),
)
def test_finish_time_inverts_bytes_between(rates_mbps, t, nbytes):
    rates = tuple(r * 1e6 for r in rates_mbps)
    if not any(rates):
        rates = rates[:-1] + (1e6,)
    tr = Trace("h", "x", tuple(float(i) for i in range(len(rates))), rates, float(len(rates)))
    end = tr.finish_time(t, nbytes)
    assert end >= t
    assert tr.bytes_between(t, end) == pytest.approx(nbytes, rel=1e-6, abs=1e-3)


def test_two_column_loader_handles_irregular_times_and_zeros(tmp_path):
    f = tmp_path / "t"
    f.write_text("0.0 1.0\n0.4 0\n\n1.9 2.5\n")
    tr = load_two_column(f, "hsdpa")
    assert tr.starts_s == (0.0, 0.4, 1.9)
    assert tr.rates_bps == (1e6, 0.0, 2.5e6)
    assert tr.duration_s == pytest.approx(1.9 + 0.95)  # last sample: the median gap


@pytest.mark.parametrize(
    "text, message",
    [
        ("0.0 1.0\n1.0\n", r"t:2: expected 2 columns"),
        ("0.0 1.0\n1.0 fast\n", r"t:2: not a number"),
        ("0.0 nan\n", r"t:1: NaN"),
        ("0.0 1.0\n1.0 -3\n", r"t:2: negative bandwidth"),
        ("0.0 1.0\n1.0 2.0\n1.0 3.0\n", r"t:3: time 1.0 does not increase"),
        ("", r"t: empty trace"),
        ("0 0\n1 0\n", r"t: every throughput sample is 0"),
    ],
)
def test_two_column_errors_name_file_and_line(tmp_path, text, message):
    f = tmp_path / "t"
    f.write_text(text)
    with pytest.raises(TraceError, match=message):
        load_two_column(f)


HEADER = "Timestamp,Longitude,Latitude,Speed,DL_bitrate,UL_bitrate\n"


def test_5g_loader_merges_repeated_seconds_and_skips_dashes(tmp_path):
    f = tmp_path / "g.csv"
    f.write_text(
        HEADER
        + "2020.01.01_10.00.00,0,0,0,1000,5\n"
        + "2020.01.01_10.00.01,0,0,0,2000,5\n"
        + "2020.01.01_10.00.01,0,0,0,4000,5\n"
        + "2020.01.01_10.00.02,0,0,0,-,5\n"
        + "2020.01.01_10.00.03,0,0,0,500,5\n"
    )
    tr = load_5g_csv(f)
    assert tr.starts_s == (0.0, 1.0, 3.0)
    assert tr.rates_bps == (1e6, 3e6, 0.5e6)  # kbit/s -> bit/s; UL_bitrate ignored


@pytest.mark.parametrize(
    "rows, message",
    [
        ("2020.01.01_10.00.00,0,0,0,abc,5\n", r"g.csv:2: DL_bitrate 'abc' is not a number"),
        ("2020.01.01_10.00.00,0,0,0,-1,5\n", r"g.csv:2: negative DL_bitrate"),
        ("2020.01.01_10.00.00,0,0,0,nan,5\n", r"g.csv:2: DL_bitrate is nan"),
        ("yesterday,0,0,0,1,5\n", r"g.csv:2: Timestamp 'yesterday'"),
        (
            "2020.01.01_10.00.05,0,0,0,1,5\n2020.01.01_10.00.01,0,0,0,1,5\n",
            r"g.csv:3: Timestamp goes back",
        ),
        ("2020.01.01_10.00.00,0,0,0,-,5\n", r"g.csv: no measured DL_bitrate"),
    ],
)
def test_5g_errors_name_file_and_line(tmp_path, rows, message):
    f = tmp_path / "g.csv"
    f.write_text(HEADER + rows)
    with pytest.raises(TraceError, match=message):
        load_5g_csv(f)


def test_5g_missing_column(tmp_path):
    f = tmp_path / "g.csv"
    f.write_text("Timestamp,UL_bitrate\n2020.01.01_10.00.00,5\n")
    with pytest.raises(TraceError, match=r"g.csv:1: missing column\(s\) DL_bitrate"):
        load_5g_csv(f)


def test_directory_with_bad_files_loads_the_good_ones(tmp_path):
    (tmp_path / "good").write_text("0 1\n1 2\n")
    (tmp_path / "bad").write_text("0 1\n1 -2\n")
    (tmp_path / "README.md").write_text("not a trace")
    report = load_dir(tmp_path)
    assert [t.name for t in report.traces] == ["good"]
    assert len(report.errors) == 1 and "bad:2: negative bandwidth" in report.errors[0]


def test_split_is_a_pure_function_of_the_name():
    names = [f"trace_{i}" for i in range(2000)]
    splits = [split_of(n) for n in names]
    assert splits == [split_of(n) for n in names]
    frac = {s: splits.count(s) / len(names) for s in ("train", "val", "test")}
    assert 0.65 < frac["train"] < 0.75 and 0.12 < frac["test"] < 0.18


def test_builtin_traces_cover_every_family_and_split():
    for split in ("train", "val", "test"):
        found, errors = load_families("builtin", split=split)
        assert set(found) == {"hsdpa", "fcc", "oboe", "5g"} and not errors


def test_synthetic_traces_follow_the_fitted_statistics():
    params = load_params()
    for family, p in params.items():
        tr = generate(p, 20000.0, seed=1)
        rates = np.asarray(tr.rates_bps)
        logs = np.log(rates[rates > 0])
        assert abs(logs.mean() - p.mu) < 0.25 * p.sigma + 0.1, family
        assert abs(logs.std() - p.sigma) < 0.25 * p.sigma, family
        assert math.isclose(tr.duration_s, len(rates) * p.dt_s)


def test_scaled_uplink_applies_ratio_cap_and_rtt():
    tr = Trace("c", "x", (0.0, 1.0), (10e6, 1e6), 2.0)
    up = tr.scaled(0.5, cap_bps=2e6, rtt_s=0.05)
    assert up.rates_bps == (2e6, 0.5e6) and up.rtt_s == 0.05


def test_a_trace_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    from traces.loaders import load_trace
    from traces.sets import load_directory
    from traces.trace import TraceError

    big = tmp_path / "big.txt"
    big.write_text("".join(f"{i} 1.0\n" for i in range(20_000)))  # about 190 KB
    monkeypatch.setenv("SPLITCTL_MAX_TRACE_MB", "0.1")
    with pytest.raises(TraceError, match=r"big.txt: 0.2 MiB, over the 0.1 MiB limit"):
        load_trace(big)
    with pytest.raises(TraceError, match=r"1 bad:\n  .*big.txt: 0.2 MiB, over"):
        load_directory(tmp_path)
    monkeypatch.delenv("SPLITCTL_MAX_TRACE_MB")
    assert load_trace(big).duration_s > 19_000  # under the default limit of 16 MiB


# -- a trace spanning more than MAX_TRACE_SPAN_S ----------------------------------------
def gap_trace(folder, gap_s: float):
    """A two-column HSDPA trace with a jump of ``gap_s`` seconds at line 31."""
    path = folder / "hsdpa" / "gap.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{t} 1.5" for t in range(30)] + [f"{gap_s + t} 2.0" for t in range(30)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("gap_s", [2e6, 1e9, 1e15, 2.0**60])
def test_a_huge_timestamp_gap_is_refused_naming_file_and_line(tmp_path, gap_s):
    path = gap_trace(tmp_path, gap_s)
    with pytest.raises(TraceError, match=rf"{path}:31: time .* a trace may span at most"):
        load_two_column(path)


def test_a_huge_gap_in_a_5g_csv_names_its_line(tmp_path):
    path = tmp_path / "g.csv"
    path.write_text(
        "Timestamp,DL_bitrate\n2020.01.01_00.00.00,100\n2020.01.01_00.00.01,100\n"
        "2051.01.01_00.00.01,100\n"
    )
    with pytest.raises(TraceError, match=rf"{path}:4: Timestamp 2051.01.01_00.00.01: time"):
        load_5g_csv(path)


def test_every_consumer_refuses_a_trace_with_a_huge_gap(tmp_path, capsys):
    """evaluate, sim-to-real, the device's shaped link and the fleet all read traces
    through the loaders: each refuses, naming the file and line, before any work."""
    import evaluate
    from runtime_hooks import device, fleet, sim2real

    path = gap_trace(tmp_path / "traces", 1e9)
    where = f"{path}:31"
    commands = [
        (
            evaluate.main,
            [
                "--traces",
                str(tmp_path / "traces"),
                "--policies",
                "edgent",
                "--out",
                str(tmp_path / "e"),
                "--no-plots",
            ],
        ),
        (sim2real.main, ["--trace", str(path)]),
        (
            device.main,
            [
                "--server",
                "127.0.0.1:9",
                "--trace",
                str(path),
                "--requests",
                "5",
                "--log",
                str(tmp_path / "d.jsonl"),
            ],
        ),
        (fleet.main, ["--server", "127.0.0.1:9", "--trace-dir", str(tmp_path / "traces")]),
    ]
    for main, argv in commands:
        assert main(argv) == 2, (main.__module__, capsys.readouterr())
        err = capsys.readouterr().err
        assert where in err and "Traceback" not in err, (main.__module__, err)
    assert not (tmp_path / "e").exists() and not (tmp_path / "d.jsonl").exists()
