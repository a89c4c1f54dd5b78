"""Measure model variants (``profiles.variants``) into a profile.

    python -m profiles.variant_profile [--profile FILE] [--out FILE] [--variants int8,pruned50]

For each variant, measured as the base model is (``profiles.profile``), on every sample
of the ``val`` and ``test`` splits: each early exit's confidence and correctness on the
variant's activations, and at every cut and compression level (codecs and learned
bottlenecks alike) the bytes sent and whether the cloud's float tail still answers
right from the variant's activation. Each block's host time is timed beside the float
block's in the same process (interleaved, batch 1, one thread), and the profile keeps
the base's measured time scaled by that ratio, so that a variant is priced on the same
clock as the model it replaces. The weights' bytes per block are written too. The
leakage and encoding times are the base's: the activations have the same shapes and
the same codecs encode them. Cut 0 runs no block on the device: the base's figures.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from profiles import DEFAULT_PROFILE, VARIANTS_PROFILE, codecs
from profiles.host import median_time
from profiles.multiexit import data_for_profile, head, model_for_profile, tail, to_model_input
from profiles.profile import batched, exit_answers, profile_out
from profiles.profile_io import BASE_VARIANT, load_profile, save_profile, variant_key
from profiles.variants import VARIANTS, VariantError, VariantModel, block_bytes, build_variant
from settings.cli import check_options, option, parse, run_cli, summary_of
from settings.tables import InputError

TRAIN_FOR_VARIANTS = 4096  # training images that calibrate / refit a variant


def time_ratio(float_blocks, variant_blocks, x: torch.Tensor, repeats: int) -> np.ndarray:
    """Per block, the variant's host time over the float block's, at batch 1 on one
    thread, each pair timed in turn (five rounds, the median ratio) so that both see
    the same machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ratios = []
    try:
        with torch.inference_mode():
            h = x[:1]
            for fb, vb in zip(float_blocks, variant_blocks, strict=True):
                ratios.append(_pair_ratio(fb, vb, h, repeats))
                h = fb(h)
    finally:
        torch.set_num_threads(threads)
    return np.array(ratios)


def _pair_ratio(float_block, variant_block, h: torch.Tensor, repeats: int) -> float:
    rounds = []
    for _ in range(5):
        variant_s = median_time(lambda: variant_block(h), repeats, 5)
        rounds.append(variant_s / median_time(lambda: float_block(h), repeats, 5))
    return float(np.median(rounds))


def measure_split(profile, model, spec, blocks, split, base, bottlenecks) -> dict:
    """The variant's per-sample arrays for one split (``base``: the profile's)."""
    from profiles.bottleneck_profile import measure_split as bottleneck_split

    x = to_model_input(split.inputs)
    on_device = VariantModel(model, blocks, spec.n_blocks)  # every block the variant's
    exit_conf, exit_correct = exit_answers(on_device, profile.has_exit, x, split.labels)
    sent_bytes, final_correct = base.sent_bytes.copy(), base.final_correct.copy()
    for cut in range(1, spec.n_blocks):
        mixed = VariantModel(model, blocks, cut)
        sent = batched(lambda t, m=mixed, c=cut: head(m, c, t), x)
        for level in range(profile.levels_at(cut)):
            entry = profile.bottleneck_at(cut, level)
            if entry is None:
                codec = codecs.get(profile.codec_name(cut, level))
                nbytes, decoded = codecs.round_trip(codec, sent)
                logits = batched(lambda t, c=cut: tail(model, c, t), decoded)
                result = nbytes, logits.argmax(1) == split.labels
            else:
                result = bottleneck_split(bottlenecks[(cut, level)], mixed, split)[:2]
            sent_bytes[cut, level], final_correct[cut, level] = result
    return {
        "labels": split.labels,
        "exit_conf": exit_conf,
        "exit_correct": exit_correct,
        "sent_bytes": sent_bytes,
        "final_correct": final_correct,
    }


def add_variants(profile_path: Path, out: Path, names: list[str], repeats: int = 200) -> dict:
    """The profile at ``profile_path`` with the variants ``names`` measured in; written
    to ``out``. Returns a summary per variant (test accuracy per cut, bytes, ratios)."""
    from rich.console import Console

    from profiles.bottleneck import load as load_bottleneck

    console = Console()
    profile = load_profile(profile_path)
    model, spec = model_for_profile(profile)
    splits = data_for_profile(profile, spec)
    train_x = torch.from_numpy(to_model_input(splits["train"].inputs[:TRAIN_FOR_VARIANTS]))
    bottlenecks = {
        (e["cut"], e["level"]): load_bottleneck(profile.path.parent / e["file"], model, spec)
        for e in profile.bottlenecks.values()
    }
    with np.load(profile_path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if not k.startswith(("variant_", "meta_json"))}
    meta = {k: v for k, v in profile.meta.items() if k not in ("variants", "format_version")}
    meta["variants"] = {}
    float_bytes = [block_bytes(b) for b in model.blocks]
    for name in names:
        console.print(f"variant {name}: building")
        torch.manual_seed(0)
        try:
            blocks = build_variant(name, model, train_x)
        except VariantError as exc:
            raise VariantError(f"{profile_path} (model {profile.model_ref}): {exc}") from None
        ratio = time_ratio(model.blocks, blocks, train_x, repeats)
        summary = {
            "time_ratio": [round(float(r), 4) for r in ratio],
            "block_bytes": [block_bytes(b) for b in blocks],
            "float_block_bytes": float_bytes,
        }
        arrays[variant_key(name, "block_host_s")] = profile.block_host_s * ratio
        arrays[variant_key(name, "block_bytes")] = np.array(summary["block_bytes"], np.int64)
        for split in ("val", "test"):
            console.print(f"variant {name}: measuring the {split} split")
            measured = measure_split(profile, model, spec, blocks, splits[split],
                                     profile.splits[split], bottlenecks)  # fmt: skip
            for key, value in measured.items():
                arrays[variant_key(name, f"{split}_{key}")] = value
        test = arrays[variant_key(name, "test_final_correct")][:, 0].mean(axis=1)
        summary["test_accuracy_by_cut"] = [round(float(a), 4) for a in test]
        meta["variants"][name] = summary
        console.print(f"variant {name}: {summary}")
    save_profile(out, meta, arrays)
    return meta["variants"]


@dataclass
class Args:
    """The command line."""

    profile: Path = option(DEFAULT_PROFILE, "the profile to add the variants to", type=Path)
    out: Path = option(
        VARIANTS_PROFILE,
        "the profile to write (.npz)",
        type=Path,
        check=profile_out,
    )
    variants: str = option(",".join(VARIANTS), f"comma-separated, of: {', '.join(VARIANTS)}")

    def __post_init__(self) -> None:
        check_options(self)
        names = [v.strip() for v in self.variants.split(",")]
        unknown = [v for v in names if v not in VARIANTS]
        if unknown or not names or len(set(names)) != len(names):
            what = f"unknown {', '.join(map(repr, unknown))}" if unknown else "a name twice"
            raise InputError(
                f"--variants {self.variants!r}: {what}; name each of {', '.join(VARIANTS)} at "
                f"most once ({BASE_VARIANT} is the profile's own model)"
            )
        self.names = names


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        args = parse(Args, argv, summary_of(__doc__))
        added = add_variants(args.profile, args.out, args.names)
        print(f"wrote {args.out}: variants {', '.join(added)}")
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
