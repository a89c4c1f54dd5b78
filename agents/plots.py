"""The plots evaluate.py writes: what a person would rather see than read."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def latency_cdf(results: dict, deadline_s: float, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    # Thirteen policies: ten colours repeat, so a second cycle of line styles tells apart
    # what shares a colour; PPO and the oracle are drawn thick and solid.
    colors = plt.get_cmap("tab10").colors
    for i, (name, res) in enumerate(results.items()):
        lat = np.sort(res["latency_s"]) * 1e3
        main = name in ("ppo", "oracle")
        ax.plot(
            lat, np.linspace(0, 1, len(lat)), label=name, color=colors[i % len(colors)],
            lw=2.2 if main else 1, ls="-" if main or i < len(colors) else "--",
        )  # fmt: skip
    ax.axvline(deadline_s * 1e3, color="k", ls="--", lw=1, label="deadline")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("Latency CDF, all test traces")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def reward_bars(summary: dict, families: list[str], path: Path) -> None:
    policies = list(summary["overall"])
    groups = families + ["overall"]
    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(policies)), 4.2))
    width = 0.8 / len(groups)
    x = np.arange(len(policies))
    for g, group in enumerate(groups):
        rows = summary[group] if group != "overall" else summary["overall"]
        means = [rows[p]["reward_mean"] for p in policies]
        cis = [rows[p]["reward_ci95"] for p in policies]
        ax.bar(x + g * width, means, width, yerr=cis, capsize=2, label=group)
    ax.set_xticks(x + width * (len(groups) - 1) / 2, policies, rotation=35, ha="right")
    ax.set_ylabel("mean reward per request (95% CI)")
    ax.axhline(0, color="k", lw=0.8)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Reward on the same test requests")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def actions_vs_bandwidth(results: dict, names: list[str], nvec, path: Path) -> None:
    """Chosen cut / threshold / level against the uplink bandwidth of the moment,
    coloured by battery level: does the policy react to both?"""
    names = [n for n in names if n in results]
    fig, axes = plt.subplots(len(names), 3, figsize=(12, 2.6 * len(names)), squeeze=False)
    rng = np.random.default_rng(0)
    for row, name in enumerate(names):
        res = results[name]
        bw = np.maximum(res["uplink_bps"], 1e3) / 1e6
        for col, (key, label) in enumerate(
            (("cut", "cut"), ("threshold", "threshold index"), ("level", "compression level"))
        ):
            ax = axes[row, col]
            jitter = rng.uniform(-0.25, 0.25, len(bw))
            sc = ax.scatter(
                bw,
                res[key] + jitter,
                c=res["battery_level"],
                s=3,
                cmap="viridis",
                vmin=0,
                vmax=1,
                alpha=0.5,
                rasterized=True,
            )
            ax.set_xscale("log")
            ax.set_ylim(-0.5, nvec[col] - 0.5)
            ax.set_yticks(range(int(nvec[col])))
            ax.set_ylabel(f"{name}\n{label}")
            if row == len(names) - 1:
                ax.set_xlabel("uplink bandwidth at decision (Mbit/s)")
            ax.grid(alpha=0.3)
    fig.colorbar(sc, ax=axes, label="battery level", shrink=0.6)
    fig.suptitle("Actions against bandwidth (colour: battery)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pareto(summary_overall: dict, path: Path) -> None:
    """Median latency against energy per request, one point per policy; policies that
    behave identically (cloud_only and best_fixed, often) share one point and legend entry."""
    points: dict[tuple[float, float], list[str]] = {}
    for name, row in summary_overall.items():
        key = (float(f"{row['latency_p50_ms']:.4g}"), float(f"{row['energy_mj']:.4g}"))
        points.setdefault(key, []).append(name)
    # A legend, not labels beside the points: the good policies crowd one corner.
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    colors = plt.get_cmap("tab20").colors
    markers = "osD^vP*Xh<>p"
    for i, ((latency, energy), names) in enumerate(points.items()):
        ax.scatter(latency, energy, s=50, color=colors[i % len(colors)],
                   marker=markers[i % len(markers)], label=" = ".join(names))  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("median latency (ms)")
    ax.set_ylabel("energy per request (mJ)")
    ax.set_title("Latency-energy view (lower left is better)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def offload_heatmap(results: dict, names: list[str], path: Path) -> None:
    """Share of requests sent to the cloud, by uplink bandwidth and battery level:
    a policy that reacts to both shows structure in both directions."""
    names = [n for n in names if n in results]
    bw_edges = np.logspace(-2, 2, 9)  # Mbit/s
    bat_edges = np.linspace(0, 1, 6)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        res = results[name]
        bw = np.clip(res["uplink_bps"] / 1e6, bw_edges[0], bw_edges[-1] * 0.999)
        i = np.digitize(bw, bw_edges) - 1
        j = np.clip(np.digitize(res["battery_level"], bat_edges) - 1, 0, len(bat_edges) - 2)
        share = np.full((len(bat_edges) - 1, len(bw_edges) - 1), np.nan)
        for a in range(share.shape[0]):
            for b in range(share.shape[1]):
                mask = (j == a) & (i == b)
                if mask.sum() >= 20:
                    share[a, b] = res["offloaded"][mask].mean()
        im = ax.imshow(share, origin="lower", aspect="auto", vmin=0, vmax=1, cmap="magma",
                       extent=(-2, 2, 0, 1))  # fmt: skip
        ax.set_title(name)
        ax.set_xlabel("log10 uplink bandwidth (Mbit/s)")
    axes[0][0].set_ylabel("battery level")  # one label: the next panel's would overlap it
    fig.colorbar(im, ax=axes, label="share offloaded (blank: < 20 requests)", shrink=0.85)
    fig.savefig(path, dpi=120, bbox_inches="tight")  # keeps the x labels inside
    plt.close(fig)
