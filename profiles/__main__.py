"""``python -m profiles show [FILE] [--json]``: summarise a profile."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from profiles import DEFAULT_PROFILE
from profiles.profile_io import ProfileError, load_profile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m profiles")
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="summarise a profile")
    show.add_argument("file", nargs="?", default=str(DEFAULT_PROFILE))
    show.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
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
    blocks = Table("block", "FLOPs", "params", "output", "host µs", "exit µs", "exit acc")
    for b, e in zip(summary["blocks"], summary["exits"], strict=True):
        blocks.add_row(
            str(b["block"]),
            f"{b['flops']:,}",
            f"{b['params']:,}",
            "x".join(map(str, b["output_shape"])),
            f"{b['host_us']:.1f}",
            f"{b['exit_host_us']:.1f}",
            f"{e['accuracy']:.4f}",
        )
    console.print(blocks)
    cuts = Table("cut", "codec", "mean bytes", "accuracy", "leakage (SSIM)")
    for c in summary["cuts"]:
        cuts.add_row(
            str(c["cut"]),
            c["codec"],
            f"{c['mean_bytes']:.0f}",
            f"{c['accuracy']:.4f}",
            f"{c['leakage']:.3f}",
        )
    console.print(cuts)
    console.print(f"host: {summary['host']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
