"""A multi-exit CNN in plain torch, split at any block boundary.

Blocks are 3x3 conv + batch norm + ReLU (2x2 max pool after blocks 1 and 3). Every
block has an exit: a global average pool and one linear layer for blocks 1..K-1, a 2x2
average pool and one linear layer for the last block (the model's final classifier).
``tail(cut, head(cut, x)) == forward(x)`` for every ``cut`` in ``0..n_blocks``: the
device runs ``head``, the cloud runs ``tail``.
"""

from __future__ import annotations

import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from profiles.multiexit import model_hash
from settings.tables import InputError


@dataclass(frozen=True)
class Architecture:
    channels: tuple[int, ...] = (16, 32, 48, 64, 96)
    pool_after: tuple[int, ...] = (1, 3)  # 1-based block indices followed by 2x2 max pool
    in_channels: int = 1
    image_size: int = 28
    n_classes: int = 10

    @property
    def n_blocks(self) -> int:
        return len(self.channels)

    def activation_shape(self, cut: int) -> tuple[int, int, int]:
        """(C, H, W) of what leaves the device at ``cut`` (cut 0: the input)."""
        if cut == 0:
            return (self.in_channels, self.image_size, self.image_size)
        size = self.image_size
        for block in range(1, cut + 1):
            if block in self.pool_after:
                size //= 2
        return (self.channels[cut - 1], size, size)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Architecture:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class WeightsError(InputError, RuntimeError):
    """A weights file is missing, unreadable or made for another architecture."""


class MultiExitCNN(nn.Module):
    def __init__(self, arch: Architecture | None = None) -> None:
        super().__init__()
        self.arch = arch or Architecture()
        blocks, exits = [], []
        c_in = self.arch.in_channels
        for i, c_out in enumerate(self.arch.channels, start=1):
            layers: list[nn.Module] = [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            if i in self.arch.pool_after:
                layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
            exits.append(self._exit_head(i, c_out))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.exits = nn.ModuleList(exits)

    def _exit_head(self, block: int, channels: int) -> nn.Module:
        """Early exits are cheap: global average pool + one linear layer (a few hundred
        parameters, as a micro-controller can afford after every block). The final
        classifier keeps spatial detail: 2x2 average pool + one linear layer."""
        n = self.arch.n_classes
        if block < self.arch.n_blocks:
            return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, n))
        _, h, w = self.arch.activation_shape(block)
        return nn.Sequential(
            nn.AvgPool2d(2), nn.Flatten(), nn.Linear(channels * (h // 2) * (w // 2), n)
        )

    @property
    def n_blocks(self) -> int:
        return self.arch.n_blocks

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One sample's shape, as the model contract asks (``profiles.multiexit``)."""
        return self.arch.activation_shape(0)

    def head(self, cut: int, x: torch.Tensor) -> torch.Tensor:
        """Blocks ``1..cut`` (the device side). ``cut=0`` returns the input."""
        self._check_cut(cut)
        for block in self.blocks[:cut]:
            x = block(x)
        return x

    def tail(self, cut: int, h: torch.Tensor) -> torch.Tensor:
        """Blocks ``cut+1..K`` and the final classifier (the cloud side): logits."""
        self._check_cut(cut)
        for block in self.blocks[cut:]:
            h = block(h)
        return self.exits[-1](h)

    def exit_logits(self, block: int, h: torch.Tensor) -> torch.Tensor:
        """Logits of the exit after ``block`` (1-based) given that block's output."""
        return self.exits[block - 1](h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(0, x)

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every exit, block 1 first; the last is the final classifier."""
        out = []
        for block, exit_head in zip(self.blocks, self.exits, strict=True):
            x = block(x)
            out.append(exit_head(x))
        return out

    def _check_cut(self, cut: int) -> None:
        if not 0 <= cut <= self.n_blocks:
            raise ValueError(f"cut must be in 0..{self.n_blocks}, got {cut}")


WEIGHTS_FORMAT = "splitctl-weights-v1"
NOT_WEIGHTS = "not a weights file of profiles.train_model"
UNREADABLE = "not a readable weights file of profiles.train_model"


def save_weights(model: MultiExitCNN, path: Path, metadata: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": WEIGHTS_FORMAT,
        "arch": model.arch.to_dict(),
        "state_dict": model.state_dict(),
        "metadata": metadata,
    }
    torch.save(payload, path)


def _not_torch_archive(path: Path) -> str | None:
    """Why ``path`` cannot be a file ``torch.save`` wrote (a zip archive holding a
    ``data.pkl``), or ``None``: said plainly, where torch would report a bare
    ``KeyError`` or an ``enforce fail`` of its C++ reader."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return "not a file torch.save writes"
    if not any(name.endswith("data.pkl") for name in names):
        return "a zip archive, but not one torch.save writes"
    return None


def load_model(path: str | Path, *, expected_hash: str | None = None) -> MultiExitCNN:
    """Load weights saved by ``save_weights``; eval mode. Errors name the file and field;
    a file of another kind (another model's weights, a profile) says so first."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if why := _not_torch_archive(path):
        raise WeightsError(f"{path}: {UNREADABLE} ({why})")
    try:
        # weights_only: tensors and plain containers only, never arbitrary objects.
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        first = next((line for line in str(exc).splitlines() if line.strip()), "")
        first = first.split(". ")[0].rstrip(".")  # torch's messages run on for lines
        reason = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        raise WeightsError(f"{path}: {UNREADABLE} ({reason})") from exc
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else None
        what = f"its format is {found!r}" if isinstance(found, str) else "it has no 'format'"
        raise WeightsError(
            f"{path}: {NOT_WEIGHTS} ({what}, not {WEIGHTS_FORMAT!r}: the weights of another "
            "model are loaded by that model's own build function)"
        )
    try:
        arch = Architecture.from_dict(payload["arch"])
    except (KeyError, TypeError) as exc:
        raise WeightsError(f"{path}: field 'arch' is malformed ({exc})") from exc
    model = MultiExitCNN(arch)
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: field 'state_dict' is missing")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise WeightsError(
            f"{path}: state_dict does not fit the architecture "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise WeightsError(
                f"{path}: state_dict['{name}'] has shape {tuple(state[name].shape)}, "
                f"the architecture needs {tuple(tensor.shape)}"
            )
    model.load_state_dict(state)
    model.eval()
    if expected_hash is not None and model_hash(model) != expected_hash:
        raise WeightsError(
            f"{path}: model hash {model_hash(model)} does not match the expected {expected_hash}"
        )
    return model


def build() -> MultiExitCNN:
    """The shipped model, trained (the model contract's ``build``: ``profiles.model:build``)."""
    from profiles import DEFAULT_WEIGHTS

    return load_model(DEFAULT_WEIGHTS)
