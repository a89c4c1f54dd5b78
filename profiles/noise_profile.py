"""Measure activation noise into a profile: more compression levels at every activation
cut, each adding Gaussian noise to what the device sends (a defence against model
inversion), and a plot of accuracy against leakage per cut.

    python -m profiles.noise_profile [--profile FILE] [--out FILE] [--plot PNG]
    python -m profiles.noise_profile --retime --profile NOISE_FILE --out FILE

For each cut ``1..K-1`` and each relative standard deviation of ``codecs.NOISE_LEVELS``
(the noise's spread over the activation's own), measured like every codec: per sample
of the ``val`` and ``test`` splits the bytes on the wire (float16) and whether the
cloud's tail still answers right from the noised activation; the host time to noise and
encode one sample; and the leakage of what the cloud receives, by an inversion attacker
**trained on noised activations** (the adaptive attacker: one trained on clean ones
would overstate what the noise protects). The noise is drawn from a seeded generator,
so the profile is reproducible; on a device it comes from the OS's entropy.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from profiles import DEFAULT_PROFILE, codecs
from profiles.bottleneck_profile import BATCH, save_with_levels
from profiles.leakage import AttackOptions
from profiles.profile import profile_out
from profiles.profile_io import load_profile
from settings.cli import check_options, option, output_file, parse, run_cli, summary_of
from settings.tables import InputError

NOISE_PROFILE = DEFAULT_PROFILE.with_name("profile_fmnist_noise.npz")
SEED = 20261203


def _heads(model, cut: int, x: np.ndarray) -> np.ndarray:
    from profiles.multiexit import head

    with torch.inference_mode():
        return np.concatenate(
            [
                head(model, cut, torch.from_numpy(x[i : i + BATCH])).numpy()
                for i in range(0, len(x), BATCH)
            ]
        )


def received(codec, activations: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """What the cloud decodes from each noised sample, and each one's bytes."""
    rng = np.random.default_rng(seed)
    blobs = [codec.encode(a, rng) for a in activations]
    return np.stack([codec.decode(b) for b in blobs]), np.array([len(b) for b in blobs])


def measure_split(model, cut: int, codec, split, seed: int):
    """Per sample: bytes on the wire, final correctness, and what the cloud received."""
    from profiles.multiexit import tail, to_model_input

    noised, sizes = received(codec, _heads(model, cut, to_model_input(split.inputs)), seed)
    with torch.inference_mode():
        preds = np.concatenate(
            [
                tail(model, cut, torch.from_numpy(noised[i : i + BATCH])).argmax(1).numpy()
                for i in range(0, len(noised), BATCH)
            ]
        )
    return sizes, preds == split.labels, noised


def encode_seconds(model, cut: int, codec, inputs: np.ndarray, repeats: int) -> float:
    """Host time to noise and encode one sample: 64 samples' activations noised and
    encoded as one tensor, divided by 64, as ``profiles.profile.measure_encode_time``
    times every other tensor codec. The interpreter's overhead per call is amortised;
    what remains is the work per value (the spread, the draw, the sum, the float16
    conversion) that a device's C implementation also does. (Timed one sample a call,
    the noise carried some 15 us of Python per sample that no other codec's time
    carries, and the device's time scales it: 0.2 ms of the 0.3 ms it charged on the
    Raspberry Pi Zero at MobileNet's cut 4.)"""
    from profiles.host import median_time
    from profiles.multiexit import to_model_input

    h = _heads(model, cut, to_model_input(inputs[:64]))
    batch = h.reshape(len(h), -1) if h.ndim > codecs.MAX_NDIM else h
    return median_time(lambda: codec.encode(batch), repeats, 3) / len(h)


def retime_noise_levels(profile_path: Path, out: Path, repeats: int = 20) -> list[dict]:
    """The profile at ``profile_path``, which has the noise levels, with their host
    times to noise and encode measured again (``encode_seconds``) and nothing else
    changed; written to ``out``; returns a row per (cut, level), old and new time."""
    import json

    from profiles.multiexit import data_for_profile, model_for_profile
    from profiles.profile_io import save_profile

    profile = load_profile(profile_path)
    model, spec = model_for_profile(profile)
    inputs = data_for_profile(profile, spec)["test"].inputs
    with np.load(profile_path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays.pop("meta_json")))
    encode, rows = arrays["encode_host_s"].copy(), []
    for cut in range(1, profile.n_blocks):
        for level, name in enumerate(profile.codecs_by_cut[cut]):
            if not name.startswith("noise"):
                continue
            old = float(encode[cut, level])
            encode[cut, level] = encode_seconds(model, cut, codecs.get(name), inputs, repeats)
            new = float(encode[cut, level])
            rows.append(
                {
                    "cut": cut,
                    "codec": name,
                    "old_us": round(old * 1e6, 2),
                    "new_us": round(new * 1e6, 2),
                }
            )
    if not rows:
        raise InputError(f"{profile_path}: has no noise levels to time")
    arrays["encode_host_s"] = encode
    save_profile(out, meta, arrays)
    return rows


def adaptive_leakage(model, cut: int, codec, splits, received_test, n_train: int, epochs: int):
    """SSIM of an inversion attacker trained on noised activations of training samples,
    scored on the test samples the cloud received."""
    from profiles.leakage import reconstruction_ssim, train_inversion
    from profiles.multiexit import to_model_input
    from profiles.profile import LEAK_EVAL

    train_x = to_model_input(splits["train"].inputs[:n_train])
    noised, _ = received(codec, _heads(model, cut, train_x), SEED + 7 * cut)
    decoder = train_inversion(
        torch.from_numpy(noised), torch.from_numpy(train_x), epochs=epochs, seed=200 + cut
    )
    target = to_model_input(splits["test"].inputs[:LEAK_EVAL])
    return reconstruction_ssim(decoder, received_test[:LEAK_EVAL], target)


def add_noise_levels(
    profile_path: Path, out: Path, n_train: int, epochs: int, repeats: int = 20
) -> list[dict]:
    """The profile at ``profile_path`` with the noise levels added at every activation
    cut; written to ``out``; returns a row per (cut, level) added."""
    from rich.console import Console

    from profiles.multiexit import data_for_profile, model_for_profile

    console = Console()
    profile = load_profile(profile_path)
    if not profile.leakage_measured:
        raise InputError(f"{profile_path}: leakage is not measured for this model's inputs")
    model, spec = model_for_profile(profile)
    splits = data_for_profile(profile, spec)
    with np.load(profile_path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.pop("meta_json")
    meta, by_cut = dict(profile.meta), [list(names) for names in profile.codecs_by_cut]
    new, added = {}, []
    for cut in range(1, profile.n_blocks):
        for relative in codecs.NOISE_LEVELS:
            name = codecs.noise_name(relative)
            if name in by_cut[cut]:
                raise InputError(f"{profile_path}: already has {name} at cut {cut}")
            codec, level = codecs.get(name), len(by_cut[cut])
            by_cut[cut].append(name)
            console.print(f"measuring cut {cut} {name} (level {level})")
            row = {"encode_s": encode_seconds(model, cut, codec, splits["test"].inputs, repeats)}
            for i, split in enumerate(("val", "test")):
                row[split] = measure_split(model, cut, codec, splits[split], SEED + 31 * cut + i)
            row["leakage"] = adaptive_leakage(
                model, cut, codec, splits, row["test"][2], n_train, epochs
            )
            new[(cut, level)] = row
            added.append(
                {
                    "cut": cut,
                    "level": level,
                    "codec": name,
                    "test_accuracy": round(float(row["test"][1].mean()), 4),
                    "leakage_ssim": round(float(row["leakage"]), 4),
                }
            )
    meta["noise"] = {
        "levels": list(codecs.NOISE_LEVELS),
        "seed": SEED,
        "attacker": "trained on noised activations",
    }
    save_with_levels(profile, arrays, meta, by_cut, new, out)
    return added


@dataclass
class NoiseArgs(AttackOptions):
    """The command line."""

    profile: Path = option(DEFAULT_PROFILE, "the profile to add noise levels to", type=Path)
    out: Path = option(NOISE_PROFILE, "the profile to write (.npz)", type=Path, check=profile_out)
    plot: Path | None = option(
        None, "also draw accuracy against leakage per cut here (.png)", type=Path, check=output_file
    )
    retime: bool = option(
        False, "only time the noise levels of --profile again (it has them) into --out"
    )

    def __post_init__(self) -> None:
        check_options(self)


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        import json

        args = parse(NoiseArgs, argv, summary_of(__doc__))
        if args.retime:
            print(json.dumps(retime_noise_levels(args.profile, args.out), indent=2))
            print(f"wrote {args.out}")
            return 0
        added = add_noise_levels(args.profile, args.out, args.leak_train, args.leak_epochs)
        print(json.dumps(added, indent=2))
        print(f"wrote {args.out}")
        if args.plot is not None:
            from profiles.plots import privacy_frontier

            privacy_frontier(load_profile(args.out), args.plot)
            print(f"wrote {args.plot}")
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
