"""Fit the synthetic-trace parameters to the real traces and store them.

python -m traces.fit [--source shared]
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from settings.cli import summary_of
from traces.loaders import FAMILIES
from traces.sets import load_families
from traces.synthetic import PARAMS_FILE, fit, save_params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=summary_of(__doc__))
    parser.add_argument("--source", default="shared", choices=["shared", "builtin"])
    args = parser.parse_args(argv)
    traces, errors = load_families(args.source, FAMILIES, split="train")
    params = {fam: fit(fam, trs) for fam, trs in traces.items()}
    save_params(params)
    table = Table("family", "files", "dt s", "median Mbit/s", "sigma(log)", "phi", "p_enter")
    for p in params.values():
        import math

        table.add_row(
            p.family,
            str(p.n_files),
            f"{p.dt_s:.2f}",
            f"{math.exp(p.mu) / 1e6:.2f}",
            f"{p.sigma:.2f}",
            f"{p.phi:.3f}",
            f"{p.p_enter:.4f}",
        )
    Console().print(table)
    print(f"wrote {PARAMS_FILE}; {len(errors)} files skipped")
    for err in errors[:10]:
        print("  skipped:", err)


if __name__ == "__main__":
    main()
