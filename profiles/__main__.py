"""``python -m profiles show [FILE] [--json]``: summarise a profile;
``python -m profiles plot [FILE] [--out PNG]``: what each of its codecs buys.
``python -m profiles variants [FILE] [--out PNG]``: what each model variant buys."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from profiles import DEFAULT_PROFILE, VARIANTS_PROFILE
from profiles.profile_io import ProfileError, load_profile
from settings.cli import UsageError, output_file


def png_out(text: str) -> Path:
    """``plot --out``: a ``.png`` file whose folder can be created, checked before the
    profile is read. matplotlib appends ``.png`` to a name without a suffix (a folder
    ``DIR`` would become ``DIR.png``), so any other name is refused."""
    path = Path(text)
    if not path.name.endswith(".png") or path.name == ".png":
        raise UsageError(f"--out: must name a .png file, got {text}")
    try:
        return output_file(path)
    except ValueError as exc:
        raise UsageError(f"--out: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m profiles")
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="summarise a profile")
    show.add_argument("file", nargs="?", default=str(DEFAULT_PROFILE))
    show.add_argument("--json", action="store_true", help="print JSON")
    plot = sub.add_parser("plot", help="bytes against accuracy and leakage of every codec")
    plot.add_argument("file", nargs="?", default=str(DEFAULT_PROFILE))
    plot.add_argument("--out", default="out/codecs.png", help="PNG to write")
    variants = sub.add_parser("variants", help="time, accuracy and weights of each model variant")
    variants.add_argument("file", nargs="?", default=str(VARIANTS_PROFILE))
    variants.add_argument("--out", default="out/model_variants.png", help="PNG to write")
    args = parser.parse_args(argv)
    if args.command in ("plot", "variants"):
        from profiles.plots import codec_tradeoff, variant_tradeoff

        try:
            out = png_out(args.out)
            profile = load_profile(args.file)
            if args.command == "variants" and not profile.variants:
                raise ProfileError(
                    f"{args.file}: has no model variants (python -m profiles.variant_profile)"
                )
        except (ProfileError, UsageError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        draw = codec_tradeoff if args.command == "plot" else variant_tradeoff
        print(f"wrote {draw(profile, out)}")
        return 0
    try:
        summary = load_profile(args.file).summary()
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    console = Console()
    console.print(
        f"[bold]{summary['path']}[/] model {summary['model_hash']}, "
        f"final accuracy {summary['final_accuracy']:.4f}"
    )
    accuracy = {e["block"]: e["accuracy"] for e in summary["exits"]}
    blocks = Table("block", "FLOPs", "params", "output", "host µs", "exit µs", "exit acc")
    for b in summary["blocks"]:
        shape = b["output_shape"]
        blocks.add_row(
            str(b["block"]),
            f"{b['flops']:,}",
            f"{b['params']:,}",
            "x".join(map(str, shape)),
            f"{b['host_us']:.1f}",
            f"{b['exit_host_us']:.1f}" if b["has_exit"] else "-",
            f"{accuracy[b['block']]:.4f}" if b["has_exit"] else "no exit",
        )
    console.print(blocks)
    cuts = Table("cut", "codec", "mean bytes", "accuracy", "leakage (SSIM)")
    for c in summary["cuts"]:
        cuts.add_row(
            str(c["cut"]),
            c["codec"],
            f"{c['mean_bytes']:.0f}",
            f"{c['accuracy']:.4f}",
            "-" if c["leakage"] is None else f"{c['leakage']:.3f}",
        )
    console.print(cuts)
    if summary["leakage_reason"]:
        console.print(f"leakage not measured: {summary['leakage_reason']}")
    console.print(f"host: {summary['host']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
