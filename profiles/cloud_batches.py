"""The cloud's measured batch times: the file ``runtime_hooks.measure_cloud`` writes
(the real server's tail, timed at each batch size) and the shared cloud
(``sim.cloud``) reads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from settings.tables import InputError

DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "cloud_batches_fmnist.json"
FORMAT = 1


class BatchTimesError(InputError):
    """A batch-times file that is unreadable, malformed or of another model."""


@dataclass(frozen=True)
class BatchTimes:
    """Host seconds of the tail from each cut for each measured batch size."""

    path: str
    model_hash: str
    batch_sizes: tuple[int, ...]
    seconds: tuple[tuple[float, ...], ...]  # [cut][i]: batch of batch_sizes[i]

    def host_seconds(self, cut: int, batch: int) -> float:
        """Linear interpolation between measured sizes (beyond the largest: linear in
        the last two, as a batch that large is compute-bound)."""
        sizes, times = self.batch_sizes, self.seconds[cut]
        if batch <= sizes[-1] or len(sizes) == 1:
            return float(np.interp(batch, sizes, times))
        slope = (times[-1] - times[-2]) / (sizes[-1] - sizes[-2])
        return float(times[-1] + slope * (batch - sizes[-1]))

    def table(self, max_batch: int) -> np.ndarray:
        """``[cut, b]`` host seconds for batches of ``b = 0..max_batch`` (0 for b = 0)."""
        out = np.zeros((len(self.seconds), max_batch + 1))
        for cut in range(len(self.seconds)):
            out[cut, 1:] = [self.host_seconds(cut, b) for b in range(1, max_batch + 1)]
        return out


def rising_from_one(sizes: tuple[int, ...]) -> bool:
    return (
        bool(sizes) and sizes[0] == 1 and all(b > a for a, b in zip(sizes, sizes[1:], strict=False))
    )


def load_batch_times(path: str | Path, model_hash: str | None = None,
                     n_cuts: int | None = None) -> BatchTimes:  # fmt: skip
    """Read a file written by this module; ``model_hash`` / ``n_cuts``: what it must
    match (the scenario's profile)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BatchTimesError(f"{path}: not a readable batch-times file ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise BatchTimesError(f"{path}: not a batch-times file of format {FORMAT}")
    try:
        sizes = tuple(int(b) for b in raw["batch_sizes"])
        seconds = tuple(tuple(float(t) for t in row) for row in raw["seconds"])
        digest = str(raw["model_hash"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BatchTimesError(f"{path}: missing or malformed field {exc}") from None
    if not rising_from_one(sizes):
        raise BatchTimesError(f"{path}: batch_sizes must rise from 1, got {list(sizes)}")
    for cut, row in enumerate(seconds):
        if len(row) != len(sizes) or not all(np.isfinite(t) and t > 0 for t in row):
            raise BatchTimesError(
                f"{path}: seconds[{cut}] must hold {len(sizes)} positive times, got {list(row)}"
            )
    if model_hash is not None and digest != model_hash:
        raise BatchTimesError(
            f"{path}: measured on model {digest}, but the profile's model is {model_hash}"
        )
    if n_cuts is not None and len(seconds) != n_cuts:
        raise BatchTimesError(f"{path}: {len(seconds)} cuts, the profile has {n_cuts}")
    return BatchTimes(str(path), digest, sizes, seconds)
