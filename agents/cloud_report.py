"""The cloud tail's bill at several request rates, for a reserved VM, serverless
functions and the hybrid of the two (``sim.cloud_cost``): the rows evaluate.py prints
and writes, and the plot of the cost-indifference point.

    python -m agents.cloud_report [--scenario FILE] [--out out/cloud]
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from settings.cli import UsageError, check_options, option, output_dir, parse, run_cli

RATES_HZ = (0.01, 0.1, 1.0, 10.0, 30.0, 100.0, 200.0, 300.0, 500.0, 1000.0, 3000.0)
THRESHOLD = 0.9  # the cloud exits' confidence threshold (the scenario's grid has it)


def cost_rows(system, cut: int = 0, rates=RATES_HZ) -> dict:
    """USD per 1,000 requests offloaded at ``cut`` for a VM, functions and their hybrid,
    at each rate; and the indifference rate. The VM and functions are the scenario's
    hybrid's parts where its cloud is one (and ``hybrid_rate_hz`` the rate its split is
    chosen for), else the catalog's ``iaas`` and ``faas`` entries."""
    from sim.cloud_cost import indifference_rate_hz, tail_cost

    h = system.hybrid
    if h is not None:
        iaas, faas = h.vm, h.functions
    else:
        iaas, faas = system.catalog.cloud("iaas"), system.catalog.cloud("faas")
    grid = system.thresholds
    threshold = THRESHOLD if THRESHOLD in grid else grid[len(grid) // 2]
    rows = [asdict(tail_cost(system, iaas, faas, cut, threshold, r)) for r in rates]
    for row in rows:
        row["cheapest"] = min(("iaas", "faas", "hybrid"), key=lambda k, row=row: row[k])
    return {
        "cut": cut,
        "threshold": threshold,
        "iaas_cloud": iaas.name,
        "faas_cloud": faas.name,
        "indifference_rate_hz": indifference_rate_hz(system, iaas, faas, cut),
        "hybrid_rate_hz": system.cloud.rate_hz if h is not None else None,
        "rows": rows,
    }


def plot_costs(report: dict, path: Path) -> None:
    """USD per 1,000 requests against the rate (log-log), the indifference point, and
    the rates where the hybrid is the cheapest shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    rates = np.array([r["rate_hz"] for r in rows])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {
        "iaas": ("reserved VM (IaaS)", "-"),
        "faas": ("functions (FaaS)", "--"),
        "hybrid": ("hybrid: VM then functions", ":"),
    }
    for kind, (label, line) in styles.items():
        ax.plot(rates, [r[kind] for r in rows], line, marker="o", label=label)
    x = report["indifference_rate_hz"]
    ax.axvline(x, color="grey", lw=1)
    ax.annotate(
        f"indifference\n{x:.2g} req/s",
        (x, ax.get_ylim()[1]),
        ha="left",
        va="top",
        fontsize=8,
        xytext=(4, -4),
        textcoords="offset points",
    )
    if report.get("hybrid_rate_hz"):  # the scenario's hybrid: the rate its split is for
        ax.axvline(
            report["hybrid_rate_hz"],
            color="tab:green",
            lw=1,
            ls="-.",
            label=f"scenario's hybrid split for {report['hybrid_rate_hz']:g} req/s",
        )
    wins = [
        r["rate_hz"]
        for r in rows
        if r["cheapest"] == "hybrid" and r["hybrid"] < min(r["iaas"], r["faas"]) - 1e-12
    ]
    if wins:
        ax.axvspan(min(wins), max(wins), color="tab:green", alpha=0.12, label="hybrid cheapest")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="offloaded requests per second",
        ylabel="USD per 1,000 requests",
        title=f"The cloud tail's bill from cut {report['cut']}",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclass
class CloudReportArgs:
    """The command line of ``python -m agents.cloud_report``."""

    scenario: Path | None = option(None, "scenario TOML (default: built-in)", type=Path)
    cut: int = option(0, "blocks run on the device before the cloud's tail")
    out: Path = option(
        Path("out/cloud"), "folder for cloud_costs.json and .png", type=Path, check=output_dir
    )

    def __post_init__(self) -> None:
        check_options(self)  # --out: a folder that can be written, outside any training run


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        from sim import System, load_scenario

        args = parse(CloudReportArgs, argv, "The cloud tail's bill: IaaS, FaaS, hybrid.")
        system = System(load_scenario(args.scenario))
        if not 0 <= args.cut < system.k:
            raise UsageError(f"--cut: blocks on the device, 0..{system.k - 1}, got {args.cut}")
        report = cost_rows(system, args.cut)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "cloud_costs.json").write_text(json.dumps(report, indent=2))
        plot_costs(report, args.out / "cloud_costs.png")
        print_rows(report)
        print(f"wrote {args.out / 'cloud_costs.json'} and {args.out / 'cloud_costs.png'}")
        return 0

    return run_cli(run)


def print_rows(report: dict) -> None:
    print(
        f"USD per 1,000 requests offloaded at cut {report['cut']} (cloud exits at "
        f"{report['threshold']}); indifference {report['indifference_rate_hz']:.3g} req/s"
    )
    print(
        f"{'req/s':>8} {'IaaS':>10} {'FaaS':>10} {'hybrid':>10}  split  cheapest"
        "   (split: the last block on the VM; - where splitting does not pay)"
    )
    for r in report["rows"]:
        split = "-" if r["split"] == report["cut"] else str(r["split"])
        print(
            f"{r['rate_hz']:>8g} {r['iaas']:>10.3g} {r['faas']:>10.3g} {r['hybrid']:>10.3g}"
            f"  {split:>5}  {r['cheapest']}"
        )


if __name__ == "__main__":
    sys.exit(main())
