"""What each codec buys, in the style of the SC2 benchmark's figures (Matsubara et al.,
TMLR 2023): bytes per sample against accuracy, and against leakage, for the input
codecs at cut 0, the activation codecs at every cut and the learned bottlenecks."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def codec_tradeoff(profile, path: Path) -> Path:
    """Two panels over the test split: mean bytes (log scale) against accuracy after
    the codec, and against leakage; one marker per (cut, level)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test = profile.splits["test"]
    fig, (ax_acc, ax_leak) = plt.subplots(1, 2, figsize=(12, 4.8))
    colours = plt.cm.viridis(np.linspace(0, 0.9, profile.n_blocks))
    for cut in range(profile.n_blocks):
        for level in range(profile.levels_at(cut)):
            name = profile.codec_name(cut, level)
            kind = "bottleneck" if name.startswith("bottleneck") else (
                "input" if cut == 0 else "activation")  # fmt: skip
            marker = {"input": "s", "activation": "o", "bottleneck": "*"}[kind]
            size = 160 if kind == "bottleneck" else 50
            nbytes = float(test.sent_bytes[cut, level].mean())
            acc = float(test.final_correct[cut, level].mean())
            leak = float(profile.leakage[cut, level])
            style = {"marker": marker, "s": size, "color": colours[cut], "edgecolor": "black",
                     "linewidth": 0.4}  # fmt: skip
            ax_acc.scatter(nbytes, acc, **style)
            if np.isfinite(leak):
                ax_leak.scatter(nbytes, leak, **style)
            if kind == "bottleneck" or level == profile.levels_at(cut) - 1 or cut == 0:
                ax_acc.annotate(f"{cut}:{name}", (nbytes, acc), fontsize=6,
                                xytext=(3, 3), textcoords="offset points")  # fmt: skip
    full = float(test.exit_correct[-1].mean())
    ax_acc.axhline(full, color="grey", lw=0.8, ls="--", label=f"full model {full:.3f}")
    ax_acc.axhline(full - 0.01, color="grey", lw=0.8, ls=":", label="full model - 1 pp")
    for ax, ylabel in ((ax_acc, "test accuracy after the codec"),
                       (ax_leak, "leakage (SSIM of the inversion attack)")):  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("bytes per sample on the wire (mean, test split)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    handles = [plt.Line2D([], [], marker=m, ls="", color="grey", label=lbl)
               for m, lbl in (("s", "input codec (cut 0)"), ("o", "activation codec"),
                              ("*", "learned bottleneck"))]  # fmt: skip
    handles += [plt.Line2D([], [], marker="o", ls="", color=colours[c], label=f"cut {c}")
                for c in range(profile.n_blocks)]  # fmt: skip
    ax_acc.legend(handles=handles + ax_acc.get_legend_handles_labels()[0], fontsize=7)
    if not profile.leakage_measured:
        why = "leakage not measured:\n" + str(profile.meta.get("leakage_reason"))
        ax_leak.text(0.5, 0.5, why, ha="center", va="center", transform=ax_leak.transAxes,
                     fontsize=8, wrap=True)  # fmt: skip
    fig.suptitle(f"{Path(profile.path).name}: what each codec buys")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def pareto_front(accuracy: np.ndarray, leakage: np.ndarray) -> list[int]:
    """The levels no other beats on both (at least as accurate and as private, and
    better on one)."""

    def beaten(i: int) -> bool:
        return any(
            accuracy[j] >= accuracy[i]
            and leakage[j] <= leakage[i]
            and (accuracy[j] > accuracy[i] or leakage[j] < leakage[i])
            for j in range(len(accuracy))
        )

    return [i for i in range(len(accuracy)) if not beaten(i)]


def privacy_frontier(profile, path: Path) -> None:
    """Accuracy of the cloud's answer against the leakage of what crossed the uplink
    (SSIM of the inversion attack), one panel per activation cut: every codec of the
    cut, the noise levels marked, and the Pareto frontier (no other level is both more
    accurate and less leaky)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cuts = list(range(1, profile.n_blocks))
    fig, axes = plt.subplots(1, len(cuts), figsize=(3.4 * len(cuts), 3.4), squeeze=False)
    test = profile.splits["test"]
    for ax, cut in zip(axes[0], cuts, strict=True):
        names = profile.codecs_by_cut[cut]
        acc = np.array([test.final_correct[cut, lvl].mean() for lvl in range(len(names))])
        leak = np.array([profile.leakage[cut, lvl] for lvl in range(len(names))])
        noise = np.array([n.startswith("noise") for n in names])
        ax.scatter(leak[~noise], acc[~noise], marker="o", label="codecs, bottlenecks")
        ax.scatter(leak[noise], acc[noise], marker="^", color="tab:red", label="noise")
        for name, x, y in zip(names, leak, acc, strict=True):
            ax.annotate(name, (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
        front = sorted(pareto_front(acc, leak), key=lambda i: leak[i])
        ax.plot(leak[front], acc[front], "-", color="grey", lw=1, label="Pareto frontier")
        ax.set(title=f"cut {cut}", xlabel="leakage (SSIM of the inversion)")
    axes[0][0].set_ylabel("test accuracy of the cloud's answer")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def variant_weights(profile, name: str) -> np.ndarray:
    """Bytes of each device block's weights under variant ``name`` (the base model's
    as ``profiles.variant_profile`` counted them beside its variants)."""
    if name in profile.variants:
        return profile.variants[name].block_bytes
    first = next(iter(profile.meta["variants"].values()))
    return np.asarray(first["float_block_bytes"], dtype=float)


def variant_tradeoff(profile, path: Path) -> Path:
    """What each model variant buys (``profiles.variants``), per cut on the test split:
    the device blocks' host time against the answer's accuracy (the float tail's from
    the cut's first codec; the last cut: the device's final exit), and the weights the
    device holds at each cut."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_time, ax_bytes) = plt.subplots(1, 2, figsize=(12, 4.8))
    k = profile.n_blocks
    for name, marker in zip(profile.variant_names, "os^v", strict=False):
        v = profile.variant(name)
        test = v.splits["test"]
        host_ms = np.concatenate([[0.0], np.cumsum(v.block_host_s)]) * 1e3
        accuracy = [float(test.final_correct[c, 0].mean()) for c in range(k)]
        accuracy.append(float(test.exit_correct[k - 1].mean()))
        ax_time.plot(host_ms, accuracy, marker=marker, label=name)
        for cut, (x, y) in enumerate(zip(host_ms, accuracy, strict=True)):
            ax_time.annotate(
                str(cut), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
        weights = variant_weights(profile, name)
        kib = np.concatenate([[0], np.cumsum(weights)]) / 1024
        ax_bytes.plot(range(k + 1), kib, marker=marker, label=name)
    ax_time.set_xlabel("device blocks 1..cut, host time (ms, batch 1, one thread)")
    ax_time.set_ylabel("test accuracy of the answer")
    ax_time.set_title("time against accuracy, per cut (labels)")
    ax_bytes.set_xlabel("cut (blocks on the device)")
    ax_bytes.set_ylabel("weights on the device (KiB)")
    ax_bytes.set_title("what the device stores")
    for ax in (ax_time, ax_bytes):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
