"""The measured profile of one (model, dataset): schema, loading, validation, summary.

A profile is one ``.npz`` file (no pickles) written by ``python -m profiles.profile``.
It holds, for a real trained multi-exit network:

* per block ``b = 1..K``: FLOPs, parameters, output shape, host latency of the block
  and of its exit head (batch 1, one thread, median of many runs);
* per split (``val``: held out of the train split, used for training agents;
  ``test``: the official test split, used for evaluation) and per sample:
  the label, each exit's max-softmax confidence and correctness;
* per cut ``c = 0..K-1``, compression level and sample: the encoded size in bytes and
  whether the final answer is still correct after encode -> decode -> tail;
* per cut and level: a leakage figure in [0, 1] (see ``LEAKAGE_METRIC``);
* the model hash and a description of the profiling host.

Loading needs only numpy, so the simulator and the device runtime can read it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from profiles import DEFAULT_PROFILE
from settings.tables import InputError

FORMAT_VERSION = 1
SPLITS = ("val", "test")
LEAKAGE_METRIC = (
    "SSIM between the original image and its reconstruction by an inversion decoder "
    "trained on the train split (fp32 activations) and scored on test images after the "
    "codec; at cut 0 the receiver holds the (decoded) image itself"
)


class ProfileError(InputError):
    """A profile file is missing, malformed, or belongs to another model."""


@dataclass(frozen=True)
class SplitData:
    labels: np.ndarray  # (N,) int
    exit_conf: np.ndarray  # (K, N) float32, max softmax of exit b+1
    exit_correct: np.ndarray  # (K, N) bool
    sent_bytes: np.ndarray  # (K, L, N) int32, cut c = 0..K-1, level l
    final_correct: np.ndarray  # (K, L, N) bool

    @property
    def n(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Profile:
    path: Path
    meta: dict
    block_flops: np.ndarray  # (K,)
    block_params: np.ndarray  # (K,)
    block_shape: np.ndarray  # (K, 3)
    block_host_s: np.ndarray  # (K,)
    exit_host_s: np.ndarray  # (K,)
    encode_host_s: np.ndarray  # (K, L): host time to encode one sample at cut, level
    block_ops: np.ndarray  # (K,) operators dispatched by each block
    exit_ops: np.ndarray  # (K,) operators dispatched by each exit head
    dispatch_host_s: float  # host framework cost of dispatching one operator
    leakage: np.ndarray  # (K, L) for cuts 0..K-1
    splits: dict[str, SplitData]

    def compute_host_s(self) -> tuple[np.ndarray, np.ndarray]:
        """Block and exit latencies less the framework's dispatch cost: the part of
        the host time that is arithmetic and memory traffic (at least 10% of it)."""
        d = self.dispatch_host_s
        blocks = np.maximum(self.block_host_s - self.block_ops * d, 0.1 * self.block_host_s)
        exits = np.maximum(self.exit_host_s - self.exit_ops * d, 0.1 * self.exit_host_s)
        return blocks, exits

    @property
    def model_hash(self) -> str:
        return self.meta["model_hash"]

    @property
    def n_blocks(self) -> int:
        return len(self.block_flops)

    @property
    def n_levels(self) -> int:
        return self.leakage.shape[1]

    @property
    def codec_names(self) -> dict[str, list[str]]:
        return self.meta["codecs"]

    def codec_name(self, cut: int, level: int) -> str:
        return self.codec_names["input" if cut == 0 else "activation"][level]

    def check_model_hash(self, model_hash: str, what: str = "model") -> None:
        if model_hash != self.model_hash:
            raise ProfileError(
                f"{self.path}: field 'model_hash' is {self.model_hash}, but the {what} "
                f"has hash {model_hash}: the profile was measured on another model"
            )

    def summary(self) -> dict:
        """The JSON summary printed by ``python -m profiles show``."""
        test = self.splits["test"]
        compute, _ = self.compute_host_s()
        exits = [
            {"block": b + 1, "accuracy": round(float(test.exit_correct[b].mean()), 4)}
            for b in range(self.n_blocks)
        ]
        cuts = []
        for cut in range(self.n_blocks):
            for level in range(self.n_levels):
                cuts.append(
                    {
                        "cut": cut,
                        "level": level,
                        "codec": self.codec_name(cut, level),
                        "mean_bytes": round(float(test.sent_bytes[cut, level].mean()), 1),
                        "accuracy": round(float(test.final_correct[cut, level].mean()), 4),
                        "leakage": round(float(self.leakage[cut, level]), 4),
                    }
                )
        return {
            "path": str(self.path),
            "format_version": self.meta["format_version"],
            "model_hash": self.model_hash,
            "n_blocks": self.n_blocks,
            "final_accuracy": exits[-1]["accuracy"],
            "exits": exits,
            "blocks": [
                {
                    "block": b + 1,
                    "flops": int(self.block_flops[b]),
                    "params": int(self.block_params[b]),
                    "output_shape": [int(v) for v in self.block_shape[b]],
                    "host_us": round(float(self.block_host_s[b]) * 1e6, 1),
                    "exit_host_us": round(float(self.exit_host_s[b]) * 1e6, 1),
                    "compute_host_us": round(float(compute[b]) * 1e6, 1),
                }
                for b in range(self.n_blocks)
            ],
            "cuts": cuts,
            "dispatch_host_us": round(self.dispatch_host_s * 1e6, 2),
            "encode_host_us": (self.encode_host_s * 1e6).round(1).tolist(),
            "leakage_metric": self.meta["leakage_metric"],
            "host": self.meta["host"],
        }


_BLOCK_FIELDS = (
    "block_flops",
    "block_params",
    "block_shape",
    "block_host_s",
    "exit_host_s",
    "block_ops",
    "exit_ops",
)
_SPLIT_FIELDS = ("labels", "exit_conf", "exit_correct", "sent_bytes", "final_correct")


def save_profile(path: Path, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "format_version": FORMAT_VERSION}
    np.savez_compressed(path, meta_json=np.array(json.dumps(meta, sort_keys=True)), **arrays)


def read_npz(
    path: Path, what: str, error: type[Exception]
) -> tuple[dict[str, np.ndarray], Callable[[str], np.ndarray]]:
    """Every array of an ``.npz`` file (no pickles), and ``need(field)``, which returns
    one or raises ``error`` naming the file and the missing field. A missing or
    unreadable file raises ``error`` naming it as ``what``."""
    if not path.is_file():
        raise error(f"{path}: {what} file not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except Exception as exc:  # zipfile / ValueError / OSError on a corrupt archive
        raise error(f"{path}: not a readable {what} file ({exc})") from exc

    def need(name: str) -> np.ndarray:
        if name not in data:
            raise error(f"{path}: field '{name}' is missing")
        return data[name]

    return data, need


def load_profile(path: str | Path = DEFAULT_PROFILE) -> Profile:
    """Load and validate a profile; every error names the file and the field."""
    path = Path(path)
    _, need = read_npz(path, "profile", ProfileError)

    try:
        meta = json.loads(str(need("meta_json")))
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{path}: field 'meta_json' is not JSON ({exc})") from exc
    for key in ("format_version", "model_hash", "host", "codecs", "leakage_metric"):
        if key not in meta:
            raise ProfileError(f"{path}: field 'meta_json.{key}' is missing")
    if meta["format_version"] != FORMAT_VERSION:
        raise ProfileError(
            f"{path}: field 'format_version' is {meta['format_version']}, "
            f"this code reads {FORMAT_VERSION}"
        )
    blocks = {name: need(name) for name in _BLOCK_FIELDS}
    k = len(blocks["block_flops"])
    for name, arr in blocks.items():
        if len(arr) != k or not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ProfileError(f"{path}: field '{name}' must hold {k} finite values >= 0")
    leakage = need("leakage")
    n_levels = len(meta["codecs"]["activation"])
    encode = need("encode_host_s")
    if encode.shape != (k, n_levels) or not np.all(np.isfinite(encode)) or np.any(encode < 0):
        raise ProfileError(f"{path}: field 'encode_host_s' must be ({k}, {n_levels}) finite >= 0")
    if leakage.shape != (k, n_levels) or not np.all((leakage >= 0) & (leakage <= 1)):
        raise ProfileError(f"{path}: field 'leakage' must be ({k}, {n_levels}) within [0, 1]")
    splits = {}
    for split in SPLITS:
        arrays = {name: need(f"{split}_{name}") for name in _SPLIT_FIELDS}
        n = len(arrays["labels"])
        expected = {
            "exit_conf": (k, n),
            "exit_correct": (k, n),
            "sent_bytes": (k, n_levels, n),
            "final_correct": (k, n_levels, n),
        }
        for name, shape in expected.items():
            if arrays[name].shape != shape:
                raise ProfileError(
                    f"{path}: field '{split}_{name}' has shape {arrays[name].shape}, "
                    f"expected {shape}"
                )
        if n == 0 or np.any(arrays["sent_bytes"] <= 0):
            raise ProfileError(f"{path}: field '{split}_sent_bytes' must be positive")
        conf = arrays["exit_conf"]
        if not np.all((conf >= 0) & (conf <= 1.0001)):
            raise ProfileError(f"{path}: field '{split}_exit_conf' must lie in [0, 1]")
        splits[split] = SplitData(
            labels=arrays["labels"].astype(np.int64),
            exit_conf=conf.astype(np.float32),
            exit_correct=arrays["exit_correct"].astype(bool),
            sent_bytes=arrays["sent_bytes"].astype(np.int64),
            final_correct=arrays["final_correct"].astype(bool),
        )
    return Profile(
        path=path,
        meta=meta,
        leakage=leakage.astype(np.float64),
        encode_host_s=encode.astype(np.float64),
        dispatch_host_s=float(need("dispatch_host_s")),
        splits=splits,
        **{name: arr.astype(np.float64) for name, arr in blocks.items()},
    )
