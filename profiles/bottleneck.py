"""Learned bottleneck codecs: a small encoder on the device after a cut, a quantised
latent on the wire, and in the cloud a decoder and a fine-tuned copy of the tail.

    python -m profiles.bottleneck [--model M:F] [--data M:F] [--cuts 1,2]
                                  [--channels 2,4,8] [--bits 4] [--epochs 5] [--seed 0]
                                  [--out profiles/data/bottlenecks]

Naive splitting sends activations larger than the compressed input (the SC2 benchmark,
Matsubara et al., TMLR 2023, found the same); a learned bottleneck at the cut fixes
that (BottleFit, Matsubara et al., WoWMoM 2022; the Entropic Student, Matsubara et al.,
WACV 2022). Here, for any model of the contract (``profiles.multiexit``) and each chosen
cut and rate:

* **encoder** (device side, after the shipped head, which stays as it is): one 3x3
  convolution with stride 2 (1-D: a 3-tap one; any other shape: a linear layer) to
  ``channels`` channels, then a sigmoid: a latent in [0, 1];
* **quantiser**: ``bits``-bit uniform levels of [0, 1], trained straight-through; on the
  wire the ``latentN`` codec of ``profiles.codecs`` (packed, then DEFLATE);
* **decoder** (cloud side): a transposed convolution back to the activation's shape,
  batch norm and ReLU, then a copy of the model's remaining blocks and final classifier,
  fine-tuned.

Training distils the frozen model's final logits (Hinton et al., 2015; temperature 4)
plus cross-entropy on the labels, with AdamW and a one-cycle schedule. Each bottleneck is
saved as its own file (no pickles: tensors and plain metadata) naming the base model's
hash, the cut and the rate, so a bottleneck is never used with another model or rate.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from profiles.multiexit import head
from settings.cli import summary_of
from settings.tables import InputError

FORMAT = "splitctl-bottleneck-v1"
DEFAULT_DIR = Path(__file__).resolve().parent / "data" / "bottlenecks"
TEMPERATURE = 4.0


class BottleneckError(InputError):
    """A bottleneck file that is missing, unreadable, or made for another model, cut
    or rate."""


def codec_name(channels: int, bits: int) -> str:
    """The level's name in a profile: ``bottleneck-c4`` (4-bit latents), else with the
    bits (``bottleneck-c4b2``)."""
    return f"bottleneck-c{channels}" + ("" if bits == 4 else f"b{bits}")


def quantise(latent: torch.Tensor, bits: int) -> torch.Tensor:
    """Uniform ``bits``-bit levels of [0, 1], straight-through in training."""
    levels = (1 << bits) - 1
    q = torch.round(latent.clamp(0, 1) * levels) / levels
    return latent + (q - latent).detach()


def _encoder(shape: tuple[int, ...], channels: int) -> tuple[nn.Module, tuple[int, ...]]:
    """The device-side layer for an activation of ``shape``, and its latent's shape."""
    if len(shape) == 3:
        stride = 2 if min(shape[1:]) >= 8 else 1
        conv = nn.Conv2d(shape[0], channels, 3, stride, 1)
        out = (channels, *(math.ceil(d / stride) for d in shape[1:]))
        return nn.Sequential(conv, nn.Sigmoid()), out
    if len(shape) == 2:
        stride = 2 if shape[1] >= 8 else 1
        conv = nn.Conv1d(shape[0], channels, 3, stride, 1)
        return nn.Sequential(conv, nn.Sigmoid()), (channels, math.ceil(shape[1] / stride))
    n = int(np.prod(shape))
    return nn.Sequential(nn.Flatten(), nn.Linear(n, channels), nn.Sigmoid()), (channels,)


class _Decoder(nn.Module):
    """Latent -> an activation of ``shape`` (the tensor the tail takes)."""

    def __init__(self, latent: tuple[int, ...], shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)
        if len(shape) == 3:
            up = nn.ConvTranspose2d(latent[0], shape[0], 4, 2, 1) if latent[1:] != shape[1:] else (
                nn.Conv2d(latent[0], shape[0], 3, 1, 1))  # fmt: skip
            self.net = nn.Sequential(up, nn.BatchNorm2d(shape[0]), nn.ReLU())
        elif len(shape) == 2:
            up = nn.ConvTranspose1d(latent[0], shape[0], 4, 2, 1) if latent[1] != shape[1] else (
                nn.Conv1d(latent[0], shape[0], 3, 1, 1))  # fmt: skip
            self.net = nn.Sequential(up, nn.BatchNorm1d(shape[0]), nn.ReLU())
        else:
            self.net = nn.Sequential(nn.Linear(latent[0], int(np.prod(shape))), nn.ReLU())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.net(z)
        if len(self.shape) >= 2 and tuple(h.shape[2:]) != self.shape[1:]:
            h = F.interpolate(h, size=self.shape[1:])  # an odd size the stride rounded up
        return h.reshape(len(h), *self.shape)


@dataclass(frozen=True)
class Rate:
    cut: int
    channels: int
    bits: int

    @property
    def name(self) -> str:
        return codec_name(self.channels, self.bits)


class Bottleneck(nn.Module):
    """One bottleneck at one cut and rate of one base model."""

    def __init__(self, model, rate: Rate, activation_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.rate = rate
        self.activation_shape = tuple(activation_shape)
        self.encoder, self.latent_shape = _encoder(self.activation_shape, rate.channels)
        self.decoder = _Decoder(self.latent_shape, self.activation_shape)
        # The cloud's copy of the tail, fine-tuned to what the decoder gives it.
        self.blocks = copy.deepcopy(nn.ModuleList(model.blocks[rate.cut :]))
        self.final = copy.deepcopy(model.exits[-1])

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        """Device side: the activation at the cut -> the latent in [0, 1]."""
        return self.encoder(h)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Cloud side: a (dequantised) latent -> the final logits."""
        h = self.decoder(latent)
        for block in self.blocks:
            h = block(h)
        return self.final(h)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decode(quantise(self.encode(h), self.rate.bits))


# -- files ---------------------------------------------------------------------------------
def path_for(folder: Path, rate: Rate) -> Path:
    return folder / f"cut{rate.cut}_{rate.name}.pt"


def save(bottleneck: Bottleneck, path: Path, model_hash: str, meta: dict) -> None:
    r = bottleneck.rate
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "format": FORMAT, "model_hash": model_hash, "cut": r.cut, "channels": r.channels,
        "bits": r.bits, "activation_shape": list(bottleneck.activation_shape),
        "latent_shape": list(bottleneck.latent_shape), "meta": meta,
        "state_dict": bottleneck.state_dict(),
    }, path)  # fmt: skip


def load(path: Path, model, spec, rate: Rate | None = None) -> Bottleneck:
    """A saved bottleneck for ``model`` (its ``ModelSpec``); refused when the file is of
    another model, cut or rate (``rate``, when given)."""
    path = Path(path)
    if not path.is_file():
        raise BottleneckError(f"{path}: bottleneck file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BottleneckError(f"{path}: not a readable bottleneck file "
                              f"({type(exc).__name__})") from exc  # fmt: skip
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise BottleneckError(f"{path}: field 'format' is not {FORMAT!r}")
    if payload.get("model_hash") != spec.model_hash:
        raise BottleneckError(
            f"{path}: made for model {payload.get('model_hash')}, this model is {spec.model_hash}"
        )
    got = Rate(int(payload["cut"]), int(payload["channels"]), int(payload["bits"]))
    if rate is not None and got != rate:
        raise BottleneckError(f"{path}: holds {got.name} at cut {got.cut}, not "
                              f"{rate.name} at cut {rate.cut}")  # fmt: skip
    if not 0 < got.cut < spec.n_blocks:
        raise BottleneckError(
            f"{path}: cut {got.cut} is not inside the model (1..{spec.n_blocks - 1})"
        )
    bottleneck = Bottleneck(model, got, spec.activation_shapes[got.cut])
    try:
        bottleneck.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise BottleneckError(f"{path}: weights do not fit the bottleneck ({exc})") from exc
    return bottleneck.eval()


# -- training -------------------------------------------------------------------------------
def train(model, spec, splits, rate: Rate, epochs: int, seed: int, batch_size: int = 128,
          lr: float = 3e-3, progress=None) -> tuple[Bottleneck, dict]:  # fmt: skip
    """Fit one bottleneck: distillation from the frozen model plus cross-entropy."""
    from profiles.multiexit import tail, to_model_input

    torch.manual_seed(seed)
    x = torch.from_numpy(to_model_input(splits["train"].inputs))
    y = torch.from_numpy(splits["train"].labels)
    with torch.inference_mode():  # the frozen device head and teacher, computed once
        acts = torch.cat([head(model, rate.cut, x[i : i + 1000]) for i in range(0, len(x), 1000)])
        teacher = torch.cat([tail(model, rate.cut, acts[i : i + 1000])
                             for i in range(0, len(acts), 1000)])  # fmt: skip
    bottleneck = Bottleneck(model, rate, spec.activation_shapes[rate.cut])
    opt = torch.optim.AdamW(bottleneck.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(y) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    task = progress.add_task(f"  cut {rate.cut} {rate.name}", total=steps) if progress else None
    t0 = time.perf_counter()
    for _ in range(epochs):
        bottleneck.train()
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), batch_size):
            idx = order[start : start + batch_size]
            logits = bottleneck(acts[idx])
            target = F.softmax(teacher[idx] / TEMPERATURE, 1)
            soft = F.kl_div(F.log_softmax(logits / TEMPERATURE, 1), target, reduction="batchmean")
            loss = soft * TEMPERATURE**2 + F.cross_entropy(logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if task is not None:
                progress.advance(task)
    bottleneck.eval()
    seconds = time.perf_counter() - t0
    val = accuracy(bottleneck, model, splits["val"])
    return bottleneck, {"epochs": epochs, "seed": seed, "train_seconds": round(seconds, 1),
                        "val_accuracy": round(val, 4)}  # fmt: skip


def accuracy(bottleneck: Bottleneck, model, split) -> float:
    from profiles.multiexit import to_model_input

    x = torch.from_numpy(to_model_input(split.inputs))
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(x), 1000):
            logits = bottleneck(head(model, bottleneck.rate.cut, x[i : i + 1000]))
            correct += int((logits.argmax(1).numpy() == split.labels[i : i + 1000]).sum())
    return correct / len(x)


def main(argv: list[str] | None = None) -> int:
    from dataclasses import dataclass as _dc

    from rich.console import Console
    from rich.progress import Progress

    from profiles.multiexit import build_model, load_data
    from settings.cli import at_least, check_options, option, parse, run_cli

    @_dc
    class Args:
        model: str = option("profiles.model:build", "the base model's build function")
        data: str = option("profiles.dataset:load", "its data's load function")
        cuts: str = option("1,2", "cuts to put a bottleneck at (comma-separated)")
        channels: str = option("2,4,8", "latent channels, one rate each (comma-separated)")
        bits: int = option(4, "bits per latent value", check=at_least(1))
        epochs: int = option(5, "training epochs per bottleneck", check=at_least(1))
        seed: int = option(0, "seed")
        out: Path = option(DEFAULT_DIR, "folder for the bottleneck files", type=Path)

        def __post_init__(self) -> None:
            check_options(self)

    def run() -> int:
        args = parse(Args, argv, summary_of(__doc__))
        console = Console()
        torch.set_num_threads(max(1, torch.get_num_threads()))
        model, spec = build_model(args.model)
        splits = load_data(args.data, spec)
        try:
            cuts = [int(c) for c in args.cuts.split(",") if c.strip()]
            channels = [int(c) for c in args.channels.split(",") if c.strip()]
        except ValueError:
            raise InputError("--cuts and --channels take integers separated by commas") from None
        for cut in cuts:
            if not 0 < cut < spec.n_blocks:
                raise InputError(f"--cuts: {cut} is not inside the model (1..{spec.n_blocks - 1})")
        if args.bits > 8:
            raise InputError(f"--bits: at most 8, got {args.bits}")
        with Progress(console=console) as progress:
            for cut in cuts:
                for c in channels:
                    rate = Rate(cut, c, args.bits)
                    bottleneck, meta = train(model, spec, splits, rate, args.epochs, args.seed,
                                             progress=progress)  # fmt: skip
                    meta["test_accuracy"] = round(accuracy(bottleneck, model, splits["test"]), 4)
                    path = path_for(args.out, rate)
                    save(bottleneck, path, spec.model_hash, meta)
                    progress.console.print(
                        f"cut {cut} {rate.name}: latent {bottleneck.latent_shape}, test accuracy "
                        f"{meta['test_accuracy']:.4f}, {meta['train_seconds']:.0f} s -> {path}"
                    )
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())


def load_for_profile(profile, model, spec) -> dict[tuple[int, int], Bottleneck]:
    """The bottlenecks a profile lists (``meta.bottlenecks``), by ``(cut, level)``, each
    checked against the model and the rate the profile measured."""
    out = {}
    for entry in profile.bottlenecks.values():
        rate = Rate(int(entry["cut"]), int(entry["channels"]), int(entry["bits"]))
        bottleneck = load(profile.path.parent / entry["file"], model, spec, rate)
        if list(bottleneck.latent_shape) != list(entry["latent_shape"]):
            raise BottleneckError(f"{entry['file']}: latent {bottleneck.latent_shape}, the "
                                  f"profile measured {entry['latent_shape']}")  # fmt: skip
        out[(rate.cut, int(entry["level"]))] = bottleneck
    return out
