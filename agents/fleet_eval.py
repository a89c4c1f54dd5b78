"""Policies compared on fleets of several sizes sharing one cloud (``evaluate.py
--scenario`` with a ``[fleet]`` table).

For each fleet size and each of ``episodes`` seeds, every policy serves the same fleet
(the same devices, traces, arrivals, images and batteries: common random numbers) for
one episode. A fleet episode is the unit of the confidence intervals and of the paired
differences: its devices share one cloud, so they are not independent of each other.
"""

from __future__ import annotations

import numpy as np

from agents.fleet_rollout import for_fleet, run_fleet
from sim import metrics
from sim.metrics import mean_ci95


def summarise_fleet(res: dict) -> dict[str, float]:
    """One fleet episode's row (``sim.metrics.summarise`` over all its requests)."""
    per_request = {k: v for k, v in res.items() if k != "episode"}  # one fleet episode
    full = metrics.summarise(per_request)
    return {
        "reward": full["reward_mean"],
        "accuracy": full["accuracy"],
        "latency_p50_ms": full["latency_p50_ms"],
        "latency_p95_ms": full["latency_p95_ms"],
        "deadline_miss_rate": full["deadline_miss_rate"],
        "offload_fraction": full["offload_fraction"],
        "server_queue_ms": full["server_queue_mean_ms"],
        "requests": full["requests"],
    }


def evaluate_fleets(scenario, traces, policies: dict, sizes, episodes: int, seed: int,
                    episode_requests: int, progress=None) -> dict:  # fmt: skip
    """``policies``: name -> ``(policy, obs_dim)``. Returns, per size, per policy, the
    mean over episodes of ``summarise_fleet`` with a 95% interval on the reward, and the
    per-episode rewards (for paired differences)."""
    from envs.fleet_env import OffloadFleetEnv

    out: dict = {}
    for n in sizes:
        fleet = OffloadFleetEnv(n, scenario, list(traces), trace_split=None,
                                sample_split="test", episode_requests=episode_requests)  # fmt: skip
        rows: dict[str, list[dict]] = {name: [] for name in policies}
        for e in range(episodes):
            for name, (policy, obs_dim) in policies.items():
                res = run_fleet(fleet, for_fleet(policy, n, obs_dim), seed=seed + e)
                rows[name].append(summarise_fleet(res))
                if progress is not None:
                    progress()
        out[n] = {}
        for name, per_episode in rows.items():
            rewards = np.array([r["reward"] for r in per_episode])
            mean, ci = mean_ci95(rewards)
            merged = {k: float(np.mean([r[k] for r in per_episode])) for k in per_episode[0]}
            merged.update(reward=mean, reward_ci95=ci, episode_rewards=rewards.tolist())
            out[n][name] = merged
    return out


def paired(results: dict, a: str, b: str) -> tuple[float, float]:
    """Mean and 95% interval of ``a - b`` over the same fleet episodes."""
    diff = np.array(results[a]["episode_rewards"]) - np.array(results[b]["episode_rewards"])
    return mean_ci95(diff)


def plot_fleets(results: dict, deadline_s: float, path) -> None:
    """Reward and p95 latency against the number of devices, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(results)
    names = list(results[sizes[0]])
    fig, (ax_r, ax_l) = plt.subplots(1, 2, figsize=(12, 4.5))
    palette = plt.get_cmap("tab20").colors
    others = [n for n in names if not n.startswith("ppo")]
    for name in names:
        if name == "ppo":
            style = {"linewidth": 2.8, "color": "black"}
        elif name == "ppo_single":
            style = {"linewidth": 2.2, "color": "tab:red", "linestyle": "--"}
        else:
            i = others.index(name)  # tab20's dark shades first, then its light ones
            style = {"linewidth": 1.2, "color": palette[(2 * i) % 20 + (i >= 10)]}
        rewards = [results[n][name]["reward"] for n in sizes]
        cis = [results[n][name]["reward_ci95"] for n in sizes]
        ax_r.errorbar(sizes, rewards, yerr=cis, marker="o", label=name, capsize=3, **style)
        ax_l.plot(sizes, [results[n][name]["latency_p95_ms"] for n in sizes], marker="o",
                  label=name, **style)  # fmt: skip
    ax_l.axhline(deadline_s * 1e3, color="grey", linestyle="--", linewidth=1, label="deadline")
    for ax in (ax_r, ax_l):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.set_xlabel("devices sharing the cloud")
        ax.grid(alpha=0.3)
    ax_r.set_ylabel("mean reward per request (± 95% CI over fleet episodes)")
    ax_l.set_ylabel("p95 latency (ms)")
    ax_l.set_yscale("log")
    ax_r.legend(fontsize=8, ncol=2)
    fig.suptitle("A fleet sharing one cloud")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
