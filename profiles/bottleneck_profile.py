"""Measure learned bottlenecks into a profile, as more compression levels at their cuts.

    python -m profiles.bottleneck_profile [--profile FILE] [--bottlenecks DIR] [--out FILE]

Each bottleneck file in ``--bottlenecks`` (``python -m profiles.bottleneck``) becomes a
level at its cut, after the cut's existing codecs, measured like every codec: per
sample of the ``val`` and ``test`` splits the bytes on the wire (the ``latentN`` codec
of the quantised latent) and whether the fine-tuned tail still answers right; the host
time to encode one sample (the device-side encoder on a batch of 64, divided by 64,
plus the wire codec); and the leakage of what the cloud receives (the decoded latent),
by the same inversion attack as the other codecs. Everything else the profile holds is
kept as it was measured. The profile then lists the bottleneck under
``meta.bottlenecks`` with its file, so that the server and the device loop can load it.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from profiles import DEFAULT_PROFILE, codecs
from profiles.bottleneck import DEFAULT_DIR, Bottleneck, load
from profiles.leakage import AttackOptions
from profiles.profile import profile_out
from profiles.profile_io import load_profile, save_profile
from settings.cli import check_options, option, parse, run_cli, summary_of
from settings.tables import InputError

BATCH = 500


def _latents(bottleneck: Bottleneck, model, x: np.ndarray) -> np.ndarray:
    from profiles.multiexit import head

    with torch.inference_mode():
        return np.concatenate([
            bottleneck.encode(head(model, bottleneck.rate.cut, torch.from_numpy(x[i : i + BATCH])))
            .numpy() for i in range(0, len(x), BATCH)
        ])  # fmt: skip


def measure_split(
    bottleneck: Bottleneck, model, split
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample: bytes on the wire, final correctness, and the decoded latents."""
    from profiles.multiexit import to_model_input

    wire = codecs.get(f"latent{bottleneck.rate.bits}")
    latents = _latents(bottleneck, model, to_model_input(split.inputs))
    sizes, decoded = codecs.round_trip(wire, latents)
    with torch.inference_mode():
        preds = np.concatenate([
            bottleneck.decode(torch.from_numpy(decoded[i : i + BATCH])).argmax(1).numpy()
            for i in range(0, len(decoded), BATCH)
        ])  # fmt: skip
    return sizes, preds == split.labels, decoded


def encode_seconds(bottleneck: Bottleneck, model, inputs: np.ndarray, repeats: int) -> float:
    """Host time to encode one sample: the encoder on a batch of 64, then the wire codec,
    divided by 64 (as ``profiles.profile.measure_encode_time`` does for tensor codecs)."""
    from profiles.host import median_time
    from profiles.multiexit import head, to_model_input

    wire = codecs.get(f"latent{bottleneck.rate.bits}")
    with torch.inference_mode():
        h = head(model, bottleneck.rate.cut, torch.from_numpy(to_model_input(inputs[:64])))

        def encode() -> bytes:
            return wire.encode(bottleneck.encode(h).numpy())

        return median_time(encode, repeats, 3) / len(h)


def leakage(bottleneck: Bottleneck, model, splits, decoded_test, n_train: int, epochs: int):
    """SSIM of the inversion attack trained on what the cloud receives (the decoded
    latent of training samples) and scored on the test samples' decoded latents."""
    from profiles.leakage import reconstruction_ssim, train_inversion
    from profiles.multiexit import to_model_input
    from profiles.profile import LEAK_EVAL

    wire = codecs.get(f"latent{bottleneck.rate.bits}")
    train_x = to_model_input(splits["train"].inputs[:n_train])
    received = np.stack([wire.decode(wire.encode(z)) for z in _latents(bottleneck, model, train_x)])
    decoder = train_inversion(torch.from_numpy(received), torch.from_numpy(train_x),
                              epochs=epochs, seed=100 + bottleneck.rate.cut)  # fmt: skip
    target = to_model_input(splits["test"].inputs[:LEAK_EVAL])
    return reconstruction_ssim(decoder, decoded_test[:LEAK_EVAL], target)


def _pad(array: np.ndarray, levels: int, fill) -> np.ndarray:
    """``array`` with its level axis (axis 1) padded to ``levels`` with ``fill``."""
    pad = [(0, 0)] * array.ndim
    pad[1] = (0, levels - array.shape[1])
    return np.pad(array, pad, constant_values=fill)


def add_bottlenecks(profile_path: Path, folder: Path, out: Path, n_train: int, epochs: int,
                    repeats: int = 50) -> dict:  # fmt: skip
    """The profile at ``profile_path`` with every bottleneck in ``folder`` added; written
    to ``out``; returns what was added."""
    from rich.console import Console

    from profiles.multiexit import data_for_profile, model_for_profile

    console = Console()
    profile = load_profile(profile_path)
    model, spec = model_for_profile(profile)
    splits = data_for_profile(profile, spec)
    files = sorted(folder.glob("cut*_bottleneck-*.pt"))
    if not files:
        raise InputError(f"{folder}: no bottleneck files (cut*_bottleneck-*.pt)")
    bottlenecks = sorted((load(f, model, spec) for f in files),
                         key=lambda b: (b.rate.cut, b.rate.channels, b.rate.bits))  # fmt: skip
    with np.load(profile_path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.pop("meta_json")
    meta = dict(profile.meta)
    by_cut = [list(names) for names in profile.codecs_by_cut]
    added: dict[str, dict] = dict(meta.get("bottlenecks", {}))
    new: dict[tuple[int, int], dict] = {}
    for b in bottlenecks:
        cut, name = b.rate.cut, b.rate.name
        if name in by_cut[cut]:
            raise InputError(f"{profile_path}: already has {name} at cut {cut}")
        level = len(by_cut[cut])
        by_cut[cut].append(name)
        console.print(f"measuring cut {cut} {name} (level {level})")
        row = {"encode_s": encode_seconds(b, model, splits["test"].inputs, repeats)}
        for split in ("val", "test"):
            row[split] = measure_split(b, model, splits[split])
        # Where the profile could not measure leakage (it says why), neither can we.
        row["leakage"] = (leakage(b, model, splits, row["test"][2], n_train, epochs)
                          if profile.leakage_measured else np.nan)  # fmt: skip
        new[(cut, level)] = row
        added[f"cut{cut}_{name}"] = {
            "cut": cut, "level": level, "name": name, "channels": b.rate.channels,
            "bits": b.rate.bits, "wire": f"latent{b.rate.bits}",
            "latent_shape": list(b.latent_shape),
            "file": os.path.relpath(Path(load_path(folder, b)).resolve(), out.parent.resolve()),
            "test_accuracy": round(float(row["test"][1].mean()), 4),
        }  # fmt: skip
    meta["bottlenecks"] = added
    save_with_levels(profile, arrays, meta, by_cut, new, out)
    return added


def save_with_levels(profile, arrays: dict, meta: dict, by_cut: list, new: dict, out: Path):
    """Write ``profile``'s ``arrays`` to ``out`` with the levels ``new`` added: by
    ``(cut, level)``, a row of ``encode_s``, ``leakage`` and per split ``(bytes per
    sample, correct per sample)``; ``by_cut`` already names them. Other cuts' new
    levels are padded (no bytes, never right: an action no policy is offered)."""
    levels = max(len(c) for c in by_cut)
    for split in ("val", "test"):
        sent = _pad(arrays[f"{split}_sent_bytes"], levels, 0)
        ok = _pad(arrays[f"{split}_final_correct"], levels, False)
        for (cut, level), row in new.items():
            sent[cut, level], ok[cut, level] = row[split][0], row[split][1]
        arrays[f"{split}_sent_bytes"], arrays[f"{split}_final_correct"] = sent, ok
    encode = _pad(arrays["encode_host_s"], levels, 0.0)
    leak = _pad(arrays["leakage"], levels, 0.0 if profile.leakage_measured else np.nan)
    for (cut, level), row in new.items():
        encode[cut, level], leak[cut, level] = row["encode_s"], row["leakage"]
    arrays["encode_host_s"], arrays["leakage"] = encode, leak
    meta["codecs_by_cut"] = by_cut
    meta.pop("format_version", None)
    if profile.meta["format_version"] == 1:  # the format-2 fields the upgrade filled in
        arrays.pop("block_shape", None)
    save_profile(out, meta, arrays)


def load_path(folder: Path, b: Bottleneck) -> Path:
    from profiles.bottleneck import path_for

    return path_for(folder, b.rate)


@dataclass
class Args(AttackOptions):
    """The command line."""

    profile: Path = option(DEFAULT_PROFILE, "the profile to add the bottlenecks to", type=Path)
    bottlenecks: Path = option(DEFAULT_DIR, "folder of bottleneck files", type=Path)
    out: Path = option(DEFAULT_PROFILE, "the profile to write (.npz)", type=Path, check=profile_out)

    def __post_init__(self) -> None:
        check_options(self)


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        args = parse(Args, argv, summary_of(__doc__))
        added = add_bottlenecks(args.profile, args.bottlenecks, args.out, args.leak_train,
                                args.leak_epochs)  # fmt: skip
        print(json.dumps(added, indent=2))
        print(f"wrote {args.out}")
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
