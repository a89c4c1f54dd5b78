"""Loader for the real Fashion-MNIST IDX files (Xiao, Rasul, Vollgraf, 2017).

The files come from Debian's ``dataset-fashion-mnist`` package. Set the environment
variable ``FASHION_MNIST_DIR`` (or pass ``data_dir``) to read them from elsewhere.
Every file is validated (magic number, dimensions, length) and errors name it.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from settings.tables import InputError

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
N_VALIDATION = 6000  # held out of the official train split, chosen by a seeded permutation
SPLIT_SEED = 20171025


class DatasetError(InputError, RuntimeError):
    """A dataset file is missing or does not hold what its name promises."""


def data_dir(override: str | os.PathLike | None = None) -> Path:
    return Path(override or os.environ.get("FASHION_MNIST_DIR") or DEFAULT_DIR)


def _read_idx(path: Path, expected_magic: int, ndim: int) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(
            f"{path}: file not found. Install Debian's dataset-fashion-mnist "
            "or set FASHION_MNIST_DIR to a folder with the IDX files."
        )
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable gzip file ({exc})") from exc
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated header ({len(raw)} bytes)")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != expected_magic:
        raise DatasetError(f"{path}: magic number {magic:#x}, expected {expected_magic:#x}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DatasetError(
            f"{path}: header says {dims} ({expected} bytes) but {len(raw) - header} bytes follow"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8, (N, 28, 28)
    labels: np.ndarray  # int64, (N,)


def load_official(split: str, override: str | os.PathLike | None = None) -> Split:
    """One official split, ``"train"`` (60k) or ``"test"`` (10k)."""
    if split not in FILES:
        raise ValueError(f"split must be one of {sorted(FILES)}, got {split!r}")
    folder = data_dir(override)
    img_name, lbl_name = FILES[split]
    images = _read_idx(folder / img_name, 0x00000803, 3)
    labels = _read_idx(folder / lbl_name, 0x00000801, 1)
    if images.shape[1:] != (28, 28):
        raise DatasetError(f"{folder / img_name}: images are {images.shape[1:]}, expected 28x28")
    if len(images) != len(labels):
        raise DatasetError(
            f"{folder / lbl_name}: {len(labels)} labels for {len(images)} images in {img_name}"
        )
    if labels.max(initial=0) >= len(CLASSES):
        raise DatasetError(f"{folder / lbl_name}: label {labels.max()} out of range 0..9")
    return Split(images, labels.astype(np.int64))


def load_splits(override: str | os.PathLike | None = None) -> dict[str, Split]:
    """Deterministic ``train`` / ``val`` / ``test`` splits.

    ``val`` is ``N_VALIDATION`` images held out of the official train split by a
    seeded permutation; ``test`` is the official test split, untouched.
    """
    train = load_official("train", override)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(train.labels))
    val_idx, train_idx = np.sort(order[:N_VALIDATION]), np.sort(order[N_VALIDATION:])
    return {
        "train": Split(train.images[train_idx], train.labels[train_idx]),
        "val": Split(train.images[val_idx], train.labels[val_idx]),
        "test": load_official("test", override),
    }


def to_tensor_input(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 1], as the model expects."""
    return (images.astype(np.float32) / 255.0)[:, None, :, :]


def load() -> dict:
    """The data contract's ``load`` for Fashion-MNIST (``profiles.dataset:load``): the
    deterministic splits as ``(inputs, labels)``, inputs ``(N, 1, 28, 28)`` uint8."""
    return {name: (s.images[:, None], s.labels) for name, s in load_splits().items()}
