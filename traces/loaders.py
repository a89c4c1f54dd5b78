"""Read real bandwidth traces from files.

Two formats, as found in ``../shared/traces`` (see its README for the sources):

* **two-column** (HSDPA, FCC, Oboe): ``time_s  throughput_Mbit/s`` per line,
  whitespace separated; irregular timestamps and zero throughput are allowed.
* **5G CSV** (Raca et al., MMSys 2020): header row; ``Timestamp`` as
  ``YYYY.MM.DD_HH.MM.SS`` and ``DL_bitrate`` in kbit/s. Rows that share a timestamp
  (the logger writes several per second) are averaged into one sample. A ``-`` in
  ``DL_bitrate`` means "not measured": the row is skipped and the previous rate
  holds. ``UL_bitrate`` is *not* uplink capacity (it is the download's side
  traffic), so the radio's documented uplink/downlink ratio is applied later.

All loaders return *downlink capacity* traces; ``Trace.scaled`` makes the uplink.
Every error names the file and the line. A rate above ``MAX_RATE_BPS`` (1 Tbit/s) is
refused on its line: no radio link comes near it, and a bigger figure is a unit mix-up
or a corrupt file (its bits/s would overflow the byte counts). A file larger than
``MAX_TRACE_BYTES`` (16 MiB, 20x the largest real trace here; ``$SPLITCTL_MAX_TRACE_MB``
changes it) is refused before it is read: parsing one holds about 20 bytes of memory
per byte of it. A bad ``$SPLITCTL_MAX_TRACE_MB`` is refused once, as a setting
(``SettingsError``), not as a bad file: loading a folder stops there rather than
skipping every file for it.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from settings.tables import SettingsError
from traces.trace import Trace, TraceError, span_problem

FAMILIES = ("hsdpa", "fcc", "oboe", "5g")
MAX_TRACE_BYTES = 16 * 2**20
MAX_RATE_BPS = 1e12  # 1 Tbit/s: far above any radio link (5G peaks near 10 Gbit/s)
_RATE_WHY = (
    "above 1 Tbit/s, far beyond any radio link (is the column in another unit, or the "
    "file damaged?)"
)


def max_trace_bytes() -> int:
    """The size limit of a trace file: ``$SPLITCTL_MAX_TRACE_MB`` MiB, else
    ``MAX_TRACE_BYTES``. A value that is not a positive number raises ``SettingsError``
    (an input error, not a ``TraceError``: it is no file's fault)."""
    override = os.environ.get("SPLITCTL_MAX_TRACE_MB")
    if not override:
        return MAX_TRACE_BYTES
    try:
        mib = float(override)
    except ValueError:
        mib = math.nan
    if not (math.isfinite(mib) and mib > 0):
        raise SettingsError(f"SPLITCTL_MAX_TRACE_MB={override!r}: expected a size in MiB (e.g. 32)")
    return int(mib * 2**20)


def check_size(path: Path) -> None:
    """Refuse a file over the size limit before reading it."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise TraceError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    limit = max_trace_bytes()
    if size > limit:
        raise TraceError(
            f"{path}: {size / 2**20:.1f} MiB, over the {limit / 2**20:.3g} MiB limit for a trace "
            "file (set SPLITCTL_MAX_TRACE_MB to raise it)"
        )


def family_of(path: Path) -> str:
    """The network family a file belongs to, from the folder names in its path."""
    for part in reversed(path.parts[:-1]):
        if part.lower() in FAMILIES:
            return part.lower()
    return path.parent.name.lower() or "custom"


def load_two_column(path: str | Path, family: str | None = None) -> Trace:
    path = Path(path)
    check_size(path)
    times, rates = [], []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: cannot read ({exc})") from exc
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields_ = line.split()
        if not fields_:
            continue
        if len(fields_) < 2:
            raise TraceError(
                f"{path}:{lineno}: expected 2 columns separated by whitespace (time_s Mbit/s), "
                f"got {line.strip()!r}"
            )
        try:
            t, mbps = float(fields_[0]), float(fields_[1])
        except ValueError:
            raise TraceError(f"{path}:{lineno}: not a number in {line.strip()!r}") from None
        if not (math.isfinite(t) and math.isfinite(mbps)):
            raise TraceError(f"{path}:{lineno}: NaN or infinity in {line.strip()!r}")
        if mbps < 0:
            raise TraceError(f"{path}:{lineno}: negative bandwidth {mbps} Mbit/s")
        if mbps * 1e6 > MAX_RATE_BPS:
            raise TraceError(f"{path}:{lineno}: {fields_[1]} Mbit/s is {_RATE_WHY}")
        if times and t <= times[-1]:
            raise TraceError(f"{path}:{lineno}: time {t} does not increase (previous {times[-1]})")
        if times and (problem := span_problem(times[0], t, times[-1])):
            raise TraceError(f"{path}:{lineno}: {problem}")
        times.append(t)
        rates.append(mbps * 1e6)
    if not times:
        raise TraceError(f"{path}: empty trace (no samples)")
    if not any(r > 0 for r in rates):
        raise TraceError(f"{path}: every throughput sample is 0")
    return _made(
        path, lambda: Trace.from_samples(path.name, family or family_of(path), times, rates)
    )


def _parse_5g_time(value: str, where: str) -> float:
    try:
        return dt.datetime.strptime(value, "%Y.%m.%d_%H.%M.%S").timestamp()
    except ValueError:
        raise TraceError(f"{where}: Timestamp {value!r} is not YYYY.MM.DD_HH.MM.SS") from None


def load_5g_csv(path: str | Path, family: str = "5g") -> Trace:
    path = Path(path)
    check_size(path)
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise TraceError(f"{path}: cannot read ({exc})") from exc
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise TraceError(f"{path}: empty file (no header)")
        missing = [c for c in ("Timestamp", "DL_bitrate") if c not in header]
        if missing:
            raise TraceError(f"{path}:1: missing column(s) {', '.join(missing)}")
        i_t, i_dl = header.index("Timestamp"), header.index("DL_bitrate")
        seconds: list[float] = []
        sums: list[list[float]] = []
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) <= max(i_t, i_dl):
                raise TraceError(
                    f"{path}:{lineno}: row has {len(row)} fields, header {len(header)}"
                )
            raw = row[i_dl].strip()
            if raw == "-":
                continue  # not measured this second: the previous rate holds
            try:
                kbps = float(raw)
            except ValueError:
                raise TraceError(f"{path}:{lineno}: DL_bitrate {raw!r} is not a number") from None
            if not math.isfinite(kbps):
                raise TraceError(f"{path}:{lineno}: DL_bitrate is {raw}")
            if kbps < 0:
                raise TraceError(f"{path}:{lineno}: negative DL_bitrate {kbps}")
            if kbps * 1e3 > MAX_RATE_BPS:
                raise TraceError(f"{path}:{lineno}: DL_bitrate {raw} kbit/s is {_RATE_WHY}")
            t = _parse_5g_time(row[i_t].strip(), f"{path}:{lineno}")
            if seconds and t < seconds[-1]:
                raise TraceError(f"{path}:{lineno}: Timestamp goes back in time")
            if seconds and (problem := span_problem(seconds[0], t, seconds[-1])):
                raise TraceError(f"{path}:{lineno}: Timestamp {row[i_t].strip()}: {problem}")
            if seconds and t == seconds[-1]:
                sums[-1].append(kbps)
            else:
                seconds.append(t)
                sums.append([kbps])
    if not seconds:
        raise TraceError(f"{path}: no measured DL_bitrate rows")
    rates = [sum(v) / len(v) * 1e3 for v in sums]
    if not any(r > 0 for r in rates):
        raise TraceError(f"{path}: every DL_bitrate sample is 0")
    # One sample per second: each holds for one second.
    starts = [t - seconds[0] for t in seconds]
    return _made(
        path, lambda: Trace(path.name, family, tuple(starts), tuple(rates), starts[-1] + 1.0)
    )


def _made(path: Path, make):
    """``make()``, a ``Trace`` of the file ``path``, its errors naming the file's path
    (a ``Trace`` knows only the file's name)."""
    try:
        return make()
    except TraceError as exc:
        raise TraceError(f"{path}: {exc.reason}") from None


def load_trace(path: str | Path, family: str | None = None) -> Trace:
    """Load one file, picking the format from its first line."""
    path = Path(path)
    check_size(path)
    try:
        with path.open("rb") as fh:
            first = fh.readline(4096)
    except OSError as exc:
        raise TraceError(f"{path}: cannot read ({exc})") from exc
    if first.startswith(b"Timestamp") or b"DL_bitrate" in first:
        return load_5g_csv(path, family or "5g")
    return load_two_column(path, family)


@dataclass
class LoadReport:
    """Traces that loaded, and files that did not with the reason."""

    traces: list[Trace] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def load_dir(root: str | Path, family: str | None = None, keep=None) -> LoadReport:
    """Every trace file under ``root`` (recursively; README/licence files skipped),
    or those whose name ``keep(name)`` accepts. Bad files are reported, not fatal: the
    good ones still load."""
    root = Path(root)
    if not root.is_dir():
        raise TraceError(f"{root}: not a directory")
    max_trace_bytes()  # a bad limit is refused once, before any file
    report = LoadReport()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.name.startswith(".") or path.suffix.lower() in {".md", ".txt_license", ".json"}:
            continue
        if path.name.upper().startswith(("README", "LICENSE", "CITATION")):
            continue
        if keep is not None and not keep(path.name):
            continue
        try:
            report.traces.append(load_trace(path, family))
        except TraceError as exc:
            report.errors.append(str(exc))
    return report
