"""The measured profile of one (model, dataset): schema, loading, validation, summary.

A profile is one ``.npz`` file (no pickles) written by ``python -m profiles.profile``.
It holds, for a real trained multi-exit network:

* the model: its hash, the ``module:function`` references of its ``build`` and of
  its data's ``load`` (``profiles.multiexit``), the input shape and kind (a uint8
  image, or any tensor), the class count, which blocks have an early exit, and the
  shape of what leaves the device at each cut;
* per block ``b = 1..K``: FLOPs, parameters, host latency of the block and of its
  exit head (batch 1, one thread, median of many runs; 0 where there is no exit);
* per split (``val``: held out of the train split, used for training agents;
  ``test``: the official test split, used for evaluation) and per sample:
  the label, each exit's max-softmax confidence and correctness;
* per cut ``c = 0..K-1``, compression level and sample: the encoded size in bytes and
  whether the final answer is still correct after encode -> decode -> tail;
* per cut and level: the codec's name, its host encode time, and a leakage figure in
  [0, 1] (see ``LEAKAGE_METRIC``), or NaN everywhere with the reason in
  ``meta.leakage_reason`` where the attack does not apply (inputs that are not images);
* a description of the profiling host;
* optionally, model variants (``python -m profiles.variant_profile``): compressed
  versions of the device's blocks, each with its blocks' host time and weight bytes
  and its own per-sample arrays (``variant_<name>_<field>``), listed in
  ``meta.variants``.

Format 1 (the built-in profile, made before the model contract) is read too: its
model is the built-in CNN on Fashion-MNIST images, with an exit after every block.

Loading needs only numpy, so the simulator and the device runtime can read it.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from profiles import DEFAULT_PROFILE
from settings.tables import InputError

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
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
class Variant:
    """A compressed version of the device's blocks (``profiles.variants``), measured:
    the cloud's tail is the base model's, so only what the device runs changes."""

    name: str
    block_host_s: np.ndarray  # (K,) host time of each block, on the base's clock
    block_bytes: np.ndarray  # (K,) bytes of each block's weights
    splits: dict[str, SplitData]


BASE_VARIANT = "float32"  # the profile's own model


def variant_key(name: str, field_name: str) -> str:
    """The array of variant ``name``'s ``field_name`` in a profile file."""
    return f"variant_{name}_{field_name}"


@dataclass(frozen=True)
class Profile:
    path: Path
    meta: dict
    block_flops: np.ndarray  # (K,)
    block_params: np.ndarray  # (K,)
    block_host_s: np.ndarray  # (K,)
    exit_host_s: np.ndarray  # (K,)
    encode_host_s: np.ndarray  # (K, L): host time to encode one sample at cut, level
    block_ops: np.ndarray  # (K,) operators dispatched by each block
    exit_ops: np.ndarray  # (K,) operators dispatched by each exit head
    dispatch_host_s: float  # host framework cost of dispatching one operator
    leakage: np.ndarray  # (K, L) for cuts 0..K-1; NaN where not measured (see meta)
    splits: dict[str, SplitData]
    variants: dict[str, Variant] = field(default_factory=dict)

    @property
    def variant_names(self) -> tuple[str, ...]:
        """The model variants measured: the base model first."""
        return (BASE_VARIANT, *self.variants)

    def variant(self, name: str) -> Profile:
        """This profile as the device sees it running variant ``name``: its blocks'
        host times and per-sample arrays; everything else (the cloud's tail, codecs,
        leakage, encoding times) the base's."""
        if name == BASE_VARIANT:
            return self
        if name not in self.variants:
            raise ProfileError(
                f"{self.path}: has no model variant {name!r}; it has "
                f"{', '.join(self.variant_names)} (python -m profiles.variant_profile)"
            )
        v = self.variants[name]
        return replace(self, block_host_s=v.block_host_s, splits=v.splits, variants={})

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
        """The most compression levels any cut offers (see ``levels_at``)."""
        return self.leakage.shape[1]

    @property
    def model_ref(self) -> str | None:
        """The model's ``build`` reference it was measured with (a relative file path
        is taken from the profile's folder)."""
        from profiles.multiexit import resolve_reference

        return resolve_reference(self.meta.get("model"), self.path.parent)

    @property
    def data_ref(self) -> str | None:
        from profiles.multiexit import resolve_reference

        return resolve_reference(self.meta.get("data"), self.path.parent)

    @property
    def n_classes(self) -> int:
        return int(self.meta["n_classes"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["input_shape"])

    @property
    def input_kind(self) -> str:
        """``"image"`` (uint8 images: image codecs at cut 0) or ``"tensor"``."""
        return self.meta["input_kind"]

    @property
    def has_exit(self) -> tuple[bool, ...]:
        """Per block, whether the model has an exit there (the last always has)."""
        return tuple(bool(v) for v in self.meta["has_exit"])

    @property
    def activation_shapes(self) -> list[tuple[int, ...]]:
        """The tensor's shape at each cut ``0..K``: the input, then each block's output
        (what leaves the device at cuts ``0..K-1``)."""
        return [tuple(v) for v in self.meta["activation_shapes"]]

    @property
    def codecs_by_cut(self) -> list[list[str]]:
        return self.meta["codecs_by_cut"]

    def codec_name(self, cut: int, level: int) -> str:
        return self.codecs_by_cut[cut][level]

    def levels_at(self, cut: int) -> int:
        """How many compression levels cut ``cut`` offers (``n_levels`` is the most)."""
        return len(self.codecs_by_cut[cut])

    @property
    def bottlenecks(self) -> dict[str, dict]:
        """The learned bottleneck levels (``profiles.bottleneck``), by ``cut{c}_{name}``,
        each with its cut, level, latent shape, wire codec and file (relative to the
        profile's folder)."""
        return self.meta.get("bottlenecks", {})

    def bottleneck_at(self, cut: int, level: int) -> dict | None:
        for entry in self.bottlenecks.values():
            if entry["cut"] == cut and entry["level"] == level:
                return entry
        return None

    @property
    def leakage_measured(self) -> bool:
        return bool(np.isfinite(self.leakage).all())

    def leakage_or_zero(self) -> np.ndarray:
        """Leakage for the reward: 0 where it was not measured (the profile says why
        in ``meta.leakage_reason``; the reward's leakage term is then off)."""
        return np.nan_to_num(self.leakage, nan=0.0)

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
            if self.has_exit[b]
        ]
        cuts = []
        for cut in range(self.n_blocks):
            for level in range(self.levels_at(cut)):
                leak = float(self.leakage[cut, level])
                cuts.append(
                    {
                        "cut": cut,
                        "level": level,
                        "codec": self.codec_name(cut, level),
                        "mean_bytes": round(float(test.sent_bytes[cut, level].mean()), 1),
                        "accuracy": round(float(test.final_correct[cut, level].mean()), 4),
                        "leakage": round(leak, 4) if np.isfinite(leak) else None,
                    }
                )
        shapes = self.activation_shapes[1:]
        return {
            "path": str(self.path),
            "format_version": self.meta["format_version"],
            "model_hash": self.model_hash,
            "model": self.meta.get("model"),
            "data": self.meta.get("data"),
            "input_shape": list(self.input_shape),
            "input_kind": self.input_kind,
            "n_classes": self.n_classes,
            "n_blocks": self.n_blocks,
            "final_accuracy": exits[-1]["accuracy"],
            "exits": exits,
            "blocks": [
                {
                    "block": b + 1,
                    "flops": int(self.block_flops[b]),
                    "params": int(self.block_params[b]),
                    "output_shape": list(shapes[b]),
                    "has_exit": self.has_exit[b],
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
            "leakage_reason": self.meta.get("leakage_reason"),
            "bottlenecks": self.bottlenecks,
            "host": self.meta["host"],
        }


_BLOCK_FIELDS = (
    "block_flops",
    "block_params",
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


NOT_NPZ = "not a .npz archive (python -m profiles.profile / runtime_hooks.export write one)"
NOT_A_PROFILE = "not a profile (made by python -m profiles.profile)"


def is_profile_file(path: Path) -> bool:
    """Whether ``path`` looks like a profile (a zip archive holding ``meta_json``),
    without loading it: what may be replaced by a new one."""
    try:
        with zipfile.ZipFile(path) as archive:
            return "meta_json.npy" in archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def read_npz(
    path: Path, what: str, error: type[Exception]
) -> tuple[dict[str, np.ndarray], Callable[[str], np.ndarray]]:
    """Every array of an ``.npz`` file (no pickles), and ``need(field)``, which returns
    one or raises ``error`` naming the file and the missing field. A missing or
    unreadable file raises ``error`` naming it as ``what``; a file that is not a zip
    archive at all is said to be no ``.npz`` (numpy itself would try it as a pickle and
    suggest loading it unsafely, which no file of this project needs)."""
    if not path.is_file():
        raise error(f"{path}: {what} file not found")
    if not zipfile.is_zipfile(path):
        raise error(f"{path}: not a readable {what} file: {NOT_NPZ}")
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
    data, need = read_npz(path, "profile", ProfileError)
    meta = _read_meta(path, data, need)
    blocks = {name: need(name) for name in _BLOCK_FIELDS}
    k = len(blocks["block_flops"])
    for name, arr in blocks.items():
        if len(arr) != k or not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ProfileError(f"{path}: field '{name}' must hold {k} finite values >= 0")
    if len(meta["has_exit"]) != k or not meta["has_exit"][-1]:
        raise ProfileError(f"{path}: field 'meta_json.has_exit' must hold {k} flags, the last "
                           "true (the final classifier)")  # fmt: skip
    codecs_by_cut = meta["codecs_by_cut"]
    if len(codecs_by_cut) != k or any(not c for c in codecs_by_cut):
        raise ProfileError(f"{path}: field 'meta_json.codecs_by_cut' must list codecs for each "
                           f"of the {k} cuts")  # fmt: skip
    n_levels = max(len(c) for c in codecs_by_cut)
    # Cuts may have different numbers of levels (a learned bottleneck adds levels at its
    # cut only); arrays are padded to the most, and the padding is never read.
    valid = np.array([[lvl < len(c) for lvl in range(n_levels)] for c in codecs_by_cut])
    if len(meta["activation_shapes"]) != k + 1:
        raise ProfileError(
            f"{path}: field 'meta_json.activation_shapes' must hold {k + 1} shapes (cuts 0..{k})"
        )
    leakage, encode = _level_arrays(path, need, meta, valid)
    splits = {split: _split_data(path, need, split, valid) for split in SPLITS}
    variants = {
        name: _variant(path, need, name, valid, splits) for name in meta.get("variants", {})
    }
    return Profile(
        variants=variants,
        path=path,
        meta=meta,
        leakage=leakage.astype(np.float64),
        encode_host_s=encode.astype(np.float64),
        dispatch_host_s=float(need("dispatch_host_s")),
        splits=splits,
        **{name: arr.astype(np.float64) for name, arr in blocks.items()},
    )


def _read_meta(path: Path, data, need) -> dict:
    """The profile's ``meta_json``, read, of a version this code reads (format 1
    upgraded) and holding every key the rest relies on."""
    if "meta_json" not in data:
        raise ProfileError(f"{path}: {NOT_A_PROFILE}; it has no field 'meta_json'")
    try:
        meta = json.loads(str(need("meta_json")))
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{path}: field 'meta_json' is not JSON ({exc})") from exc
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise ProfileError(
            f"{path}: field 'format_version' is {meta.get('format_version')}, "
            f"this code reads {', '.join(map(str, READABLE_VERSIONS))}"
        )
    if meta["format_version"] == 1:
        meta = _upgrade_v1(meta, need("block_shape"))
    for key in ("model_hash", "host", "leakage_metric", "input_shape", "input_kind",
                "n_classes", "has_exit", "activation_shapes", "codecs_by_cut"):  # fmt: skip
        if key not in meta:
            raise ProfileError(f"{path}: field 'meta_json.{key}' is missing")
    return meta


def _level_arrays(path: Path, need, meta: dict, valid: np.ndarray):
    """The per-cut, per-level ``(leakage, encode_host_s)``, checked; leakage's padding
    is 0 beside measured figures, NaN where nothing was measured."""
    k, n_levels = valid.shape
    leakage = need("leakage")
    encode = need("encode_host_s")
    if encode.shape != (k, n_levels) or not np.all(np.isfinite(encode)) or np.any(encode < 0):
        raise ProfileError(f"{path}: field 'encode_host_s' must be ({k}, {n_levels}) finite >= 0")
    if leakage.shape != (k, n_levels):
        raise ProfileError(f"{path}: field 'leakage' must be ({k}, {n_levels})")
    measured = np.isfinite(leakage) & valid
    if not (measured[valid].all() or not measured.any()) or not np.all(
        (leakage[measured] >= 0) & (leakage[measured] <= 1)
    ):
        raise ProfileError(
            f"{path}: field 'leakage' must be ({k}, {n_levels}) within [0, 1] (or all NaN)"
        )
    leakage = np.where(valid, leakage, 0.0 if measured.any() else np.nan)
    if not measured[valid].all() and not meta.get("leakage_reason"):
        raise ProfileError(f"{path}: field 'leakage' is NaN but 'meta_json.leakage_reason' "
                           "does not say why")  # fmt: skip
    return leakage, encode


def _split_data(path: Path, need, split: str, valid: np.ndarray, prefix: str = "") -> SplitData:
    """One split's per-sample arrays, checked against the profile's cuts and levels
    (``prefix``: the start of the file's field names, for the errors)."""
    k, n_levels = valid.shape
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
                f"{path}: field '{prefix}{split}_{name}' has shape {arrays[name].shape}, "
                f"expected {shape}"
            )
    if n == 0 or np.any(arrays["sent_bytes"][valid] <= 0):
        raise ProfileError(f"{path}: field '{prefix}{split}_sent_bytes' must be positive")
    conf = arrays["exit_conf"]
    if not np.all((conf >= 0) & (conf <= 1.0001)):
        raise ProfileError(f"{path}: field '{prefix}{split}_exit_conf' must lie in [0, 1]")
    return SplitData(
        labels=arrays["labels"].astype(np.int64),
        exit_conf=conf.astype(np.float32),
        exit_correct=arrays["exit_correct"].astype(bool),
        sent_bytes=arrays["sent_bytes"].astype(np.int64),
        final_correct=arrays["final_correct"].astype(bool),
    )


def _variant(path: Path, need, name: str, valid: np.ndarray, base: dict) -> Variant:
    """Variant ``name``'s arrays, checked like the base's and against its samples."""
    k = valid.shape[0]

    def need_variant(field_name: str) -> np.ndarray:
        return need(variant_key(name, field_name))

    arrays = {}
    for field_name in ("block_host_s", "block_bytes"):
        arr = need_variant(field_name)
        if arr.shape != (k,) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise ProfileError(
                f"{path}: field '{variant_key(name, field_name)}' must hold {k} values > 0"
            )
        arrays[field_name] = arr.astype(np.float64)
    splits = {}
    for split in SPLITS:
        data = _split_data(path, need_variant, split, valid, prefix=variant_key(name, ""))
        if data.n != base[split].n or not np.array_equal(data.labels, base[split].labels):
            raise ProfileError(
                f"{path}: field '{variant_key(name, split + '_labels')}' is not the base "
                "model's samples"
            )
        splits[split] = data
    return Variant(name=name, splits=splits, **arrays)


def _upgrade_v1(meta: dict, block_shape: np.ndarray) -> dict:
    """A format-1 profile (the built-in CNN on Fashion-MNIST, an exit after every
    block) in the format-2 fields."""
    arch = meta.get("arch", {})
    size, channels = int(arch.get("image_size", 28)), int(arch.get("in_channels", 1))
    input_shape = [channels, size, size]
    k = len(block_shape)
    return {
        **meta,
        "model": meta.get("model", "profiles.model:build"),
        "data": meta.get("data", "profiles.dataset:load"),
        "input_shape": input_shape,
        "input_kind": "image",
        "n_classes": int(arch.get("n_classes", 10)),
        "has_exit": [True] * k,
        "activation_shapes": [input_shape] + [[int(v) for v in row] for row in block_shape],
        "codecs_by_cut": [list(meta["codecs"]["input"])]
        + [list(meta["codecs"]["activation"]) for _ in range(k - 1)],
    }
