"""Where traces come from, and the deterministic train / validation / test split.

Sources, in the order ``"auto"`` tries them:

1. ``shared``: the real traces in ``../shared/traces`` (or ``$SPLITCTL_TRACES``);
2. ``builtin``: a small curated subset of the MIT-licensed two-column sets shipped in
   ``traces/builtin`` (licence and citations beside it), plus synthetic 5G traces
   from the fitted parameters (the 5G set is GPL-3.0 and is not copied here).

The split is by a hash of the file name, so it never depends on what else is in the
folder: about 70% train, 15% validation, 15% test.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

from traces.loaders import FAMILIES, LoadReport, load_dir
from traces.synthetic import generate, load_params
from traces.trace import Trace, TraceError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
SPLITS = ("train", "val", "test")
SOURCES = ("auto", "shared", "builtin", "synthetic")
SYNTHETIC_PER_FAMILY = 20
SYNTHETIC_DURATION_S = 600.0


def shared_dir() -> Path:
    return Path(os.environ.get("SPLITCTL_TRACES") or PROJECT_ROOT.parent / "shared" / "traces")


def group_by_family(traces: list[Trace]) -> dict[str, list[Trace]]:
    """The traces per family, each list in the order given."""
    grouped: dict[str, list[Trace]] = {}
    for trace in traces:
        grouped.setdefault(trace.family, []).append(trace)
    return grouped


def split_of(name: str) -> str:
    """``train`` / ``val`` / ``test`` from a SHA-256 of the file name."""
    u = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2**64
    return "train" if u < 0.70 else "val" if u < 0.85 else "test"


def synthetic_traces(family: str, count: int = SYNTHETIC_PER_FAMILY) -> list[Trace]:
    params = load_params()[family]
    return [
        generate(params, SYNTHETIC_DURATION_S, seed=1000 + i, name=f"synthetic_{family}_{i:03d}")
        for i in range(count)
    ]


def resolve_source(source: str) -> str:
    if source == "auto":
        return "shared" if shared_dir().is_dir() else "builtin"
    if source not in SOURCES:
        raise TraceError(f"trace source must be auto, shared, builtin or synthetic, not {source!r}")
    return source


def load_families(
    source: str = "auto", families: tuple[str, ...] = FAMILIES, split: str | None = None
) -> tuple[dict[str, list[Trace]], list[str]]:
    """Traces per family (optionally one split only) and the errors of bad files."""
    if split is not None and split not in SPLITS:
        raise TraceError(f"split must be one of {SPLITS}, got {split!r}")
    source = resolve_source(source)
    out: dict[str, list[Trace]] = {}
    errors: list[str] = []
    for family in families:
        folder = (shared_dir() if source == "shared" else BUILTIN_DIR) / family
        if source == "synthetic" or (source == "builtin" and not folder.is_dir()):
            found = synthetic_traces(family)
        else:
            traces, bad = _load_folder(folder, family, split)
            found, errors = list(traces), errors + list(bad)
        if split is not None:
            found = [t for t in found if split_of(t.name) == split]
        if found:
            out[family] = found
    if not out:
        raise TraceError(f"no traces found for {families} in source {source!r} (split {split})")
    return out, errors


@lru_cache(maxsize=64)
def _load_folder(folder: Path, family: str, split: str | None):
    """A family's folder, parsed once per process (the files of ``split`` only): a
    training run, its validation and an evaluation read the same thousands of files.
    Traces are frozen, so sharing them is safe."""
    keep = None if split is None else (lambda name: split_of(name) == split)
    report: LoadReport = load_dir(folder, family, keep)
    return tuple(report.traces), tuple(report.errors)


def load_directory(path: str | Path, split: str | None = None) -> tuple[list[Trace], list[str]]:
    """All traces under a user-given folder (``--traces DIR``), any format."""
    report = load_dir(path)
    traces = report.traces
    if split is not None:
        traces = [t for t in traces if split_of(t.name) == split]
    if not traces:
        if not report.errors:
            raise TraceError(f"{path}: no trace files in this folder")
        listed = "\n  ".join(report.errors)
        raise TraceError(f"{path}: no usable trace files; {len(report.errors)} bad:\n  {listed}")
    return traces, report.errors
