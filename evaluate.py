"""Evaluate PPO, the heuristics of the literature and the oracle on the same requests.

    python evaluate.py [--policy runs/NAME] [--traces DIR] [--episodes N] [--seed S]
                       [--policies ppo,oracle,...] [--out DIR] [--json FILE]

By default: the test split of every trace family (real traces from ../shared/traces
when present, else the built-in ones), images from the profile's test split, and the
shipped policy in ``runs/default``. Every policy runs on the same episodes: same
traces, start offsets, arrivals, images, initial battery (common random numbers).
Prints a table per family and overall; writes ``summary.csv``, ``results.json`` and
PNG plots to ``--out``.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from agents.heuristics import HEURISTICS
from settings.cli import (
    UsageError,
    check_options,
    like_field,
    option,
    output_dir,
    output_file,
    parse,
    run_cli,
    within,
)
from settings.cli import seed as seed_range
from settings.tables import closest
from sim import metrics
from sim.scenario import Workload
from traces.sets import SOURCES

PROJECT_ROOT = Path(__file__).resolve().parent
DEFAULT_RUN = PROJECT_ROOT / "runs" / "default"
# The full table runs about 16 policies x 4 families x episodes; 8 episodes take about a
# minute on 2 cores, so these bounds are hours. The baselines' fit tries every action.
MAX_EPISODES = 1_000
MAX_FIT_EPISODES = 100
EPISODES_LIMIT = "the evaluation would take hours"
ALL_POLICIES = (
    "ppo",
    "oracle",
    "oracle_label_blind",
    "planner_label_blind",
    "planner_device",
    *HEURISTICS,
    "best_fixed",
    "best_fixed_by_context",
    "random",
)
# Clairvoyant references: never "the best heuristic", never a policy to beat.
ORACLES = ("oracle", "oracle_label_blind", "planner_label_blind")
# Run only when named with --policies: the label-blind references analyse what the
# oracle's lead rests on (agents/oracle.py, agents/planner.py, BENCHMARKS.md);
# planner_device (the search on the device's own estimates and sampled futures) is a
# controller a device could run, so it competes as a heuristic. The planners take
# minutes each (planner_device about 14 on the default workload: 4 futures per plan).
ON_REQUEST = ("oracle_label_blind", "planner_label_blind", "planner_device")
DEFAULT_POLICIES = tuple(n for n in ALL_POLICIES if n not in ON_REQUEST)
console = Console(width=170)


def build_policies(names, env, run_dir, radio, seed, best_fixed_cache, by_context_cache):
    from agents.base import RandomPolicy
    from agents.heuristics import HEURISTICS, make_heuristic
    from agents.oracle import LabelBlindOracle, Oracle
    from agents.planner import DevicePlanner, ForesightPlanner
    from agents.ppo import load_ppo
    from agents.predictor import Predictor
    from telemetry.observation import OBS_DIM

    s = env.system
    pred = Predictor(s)
    makers = {
        "ppo": lambda: load_ppo(
            run_dir,
            nvec=env.action_space.nvec.tolist(),
            obs_dim=OBS_DIM,
            model_hash=s.profile.model_hash,
            levels_by_cut=s.levels_by_cut,
            variants=s.scenario.variants,
        ),
        "oracle": Oracle,
        "oracle_label_blind": LabelBlindOracle,
        "planner_label_blind": ForesightPlanner,
        "planner_device": lambda: DevicePlanner(seed=seed),
        **{name: (lambda name=name: make_heuristic(name, s, radio, pred)) for name in HEURISTICS},
        "best_fixed": lambda: best_fixed_cache(),
        "best_fixed_by_context": lambda: by_context_cache(),
        "random": lambda: RandomPolicy(
            tuple(env.action_space.nvec), seed=seed, actions=random_actions(env)
        ),  # fmt: skip
    }
    out = {}
    for name in names:
        policy = makers[name]()
        policy.name = name
        out[name] = policy
    return out


def random_actions(env):
    """The random policy draws from the valid actions only where cuts offer different
    levels (a learned bottleneck); else from the whole grid, as it always did."""
    from envs.wrappers import env_actions

    s = env.system
    return None if all(n == s.n_levels for n in s.levels_by_cut) else env_actions(env)


def episode_specs(by_family: dict, episodes: int, seed: int, battery: tuple[float, float]):
    """Each family's episodes (trace, start, battery, seed): the same for every policy."""
    from agents.rollout import make_specs

    return {
        fam: make_specs(by_family[fam], episodes, seed + i, battery)
        for i, fam in enumerate(sorted(by_family))
    }


def print_table(title: str, rows: dict[str, dict]) -> None:
    table = Table(title=title, title_justify="left")
    cols = [
        ("policy", None),
        ("reward ±95%", None),
        ("calibrated", "reward_calibrated"),
        ("acc", "accuracy"),
        ("p50 ms", "latency_p50_ms"),
        ("p95 ms", "latency_p95_ms"),
        ("p99 ms", "latency_p99_ms"),
        ("miss", "deadline_miss_rate"),
        ("mJ/req", "energy_mj"),
        ("mgCO2e", "carbon_mg_per_request"),
        ("$/M req", "cost_usd_per_million"),
        ("leak", "leakage"),
        ("offload", "offload_fraction"),
        ("req/charge", "requests_per_charge"),
    ]
    for c, _ in cols:
        table.add_column(c, justify="right" if c != "policy" else "left")
    best = max(rows, key=lambda p: rows[p]["reward_mean"] if p not in ORACLES else -np.inf)
    for name, r in sorted(rows.items(), key=lambda kv: -kv[1]["reward_mean"]):
        style = "bold" if name in (best, "ppo") else None
        table.add_row(
            name,
            f"{r['reward_mean']:.3f} ± {r['reward_ci95']:.3f}",
            *[
                (f"{r[key]:.3f}" if key in ("accuracy", "reward_calibrated") else f"{r[key]:.3g}")
                for _, key in cols[2:]
            ],
            style=style,
        )
    console.print(table)


# Policies PPO is also compared with, episode by episode, when they were run.
PPO_REFERENCES = ("best_fixed_by_context", "planner_label_blind")


def compare_ppo(results: dict, summary: dict, families: list[str], heuristics: list[str]) -> dict:
    """PPO against the best heuristic of each family (and against each of
    ``PPO_REFERENCES`` that ran), as paired differences over the same episodes; printed
    and returned for the JSON."""
    from agents.metrics import paired_difference, subset

    references = [n for n in PPO_REFERENCES if n in results]
    table = Table(
        title="PPO minus the best heuristic of each group (paired, same episodes)",
        title_justify="left",
    )
    for col in (
        "group",
        "best heuristic",
        "PPO - it ± 95%",
        *(f"PPO - {n} ± 95%" for n in references),
    ):
        table.add_column(col)
    out: dict[str, dict] = {}

    def of(name: str, group: str) -> dict:
        r = results[name]
        return r if group == "overall" else subset(r, r["family"] == group)

    for group in ["overall", *families]:
        best = max(heuristics, key=lambda n: summary[group][n]["reward_mean"])
        diff, ci = paired_difference(of("ppo", group), of(best, group))
        out[group] = {"heuristic": best, "difference": diff, "ci95": ci}
        cells = []
        for name in references:
            d, c = paired_difference(of("ppo", group), of(name, group))
            out[group][f"vs_{name}"] = {"difference": d, "ci95": c}
            cells.append(f"{d:+.4f} ± {c:.4f}")
        table.add_row(group, best, f"{diff:+.4f} ± {ci:.4f}", *cells)
    console.print(table)
    return out


# -- the command line ----------------------------------------------------------------
def policy_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"names no policy: {text!r}; known: {', '.join(ALL_POLICIES)}")
    for name in names:
        if name not in ALL_POLICIES:
            hint = closest(name, ALL_POLICIES)
            tip = f"did you mean '{hint}'? " if hint else ""
            raise ValueError(f"unknown policy {name!r} ({tip}known: {', '.join(ALL_POLICIES)})")
    return list(dict.fromkeys(names))


@dataclass
class EvalArgs:
    """evaluate.py's command line; every value is checked before anything runs."""

    policy: Path | None = option(None, "PPO run directory (default: runs/default)", type=Path)
    policies: str = option(",".join(DEFAULT_POLICIES),
                           f"comma-separated, from: {', '.join(ALL_POLICIES)}")  # fmt: skip
    traces: Path | None = option(None, "a directory of trace files", type=Path)
    trace_source: str = option("auto", "where traces come from", choices=SOURCES)
    scenario: Path | None = option(None, "scenario TOML (default: the run's)", type=Path)
    episodes: int = option(
        10, "episodes per trace family", check=within(1, MAX_EPISODES, EPISODES_LIMIT)
    )
    requests: int | None = option(
        None,
        "requests per episode (default: the scenario's)",
        type=int,
        check=like_field(Workload, "episode_requests", "[workload]"),
    )
    seed: int = option(0, "seed of the episodes", check=seed_range)
    best_fixed_episodes: int = option(
        4,
        "episodes per family for the best fixed action",
        check=within(1, MAX_FIT_EPISODES, EPISODES_LIMIT),
    )
    out: Path = option(PROJECT_ROOT / "out" / "eval", "folder for tables and plots",
                       type=Path, check=output_dir)  # fmt: skip
    json: Path | None = option(None, "also write results.json here", type=Path,
                               check=output_file)  # fmt: skip
    no_plots: bool = option(False, "no PNG plots")
    compare_run: Path | None = option(
        None,
        "a second PPO run on the same requests, as the row ppo_NAME (make demo: the "
        "shipped runs/default beside the run it just trained)",
        type=Path,
    )
    single_policy: Path = option(DEFAULT_RUN, "fleets: the single-device PPO run compared too",
                                 type=Path)  # fmt: skip
    names: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        check_options(self)
        try:
            self.names = policy_names(self.policies)
        except ValueError as exc:
            raise UsageError(f"--policies: {exc}") from None
        if self.policy is not None and "ppo" not in self.names:
            raise UsageError(
                f"--policy {self.policy}: a PPO run, but ppo is not among --policies "
                f"({self.policies}); add ppo to --policies or drop --policy"
            )
        self.policy = self.policy or DEFAULT_RUN
        if self.compare_run is not None and "ppo" not in self.names:
            raise UsageError(
                f"--compare-run {self.compare_run}: compared with ppo, which is not among "
                f"--policies ({self.policies}); add ppo to --policies"
            )

    @property
    def compare_name(self) -> str | None:
        """The row of ``--compare-run``: ``ppo_`` and the run's folder name."""
        return None if self.compare_run is None else f"ppo_{self.compare_run.resolve().name}"


@dataclass
class EvalPlan:
    """The validated inputs: scenario, traces, environments, the episodes of every
    family (the same for every policy) and the baselines fitted on training traces."""

    args: EvalArgs
    scenario: object
    by_family: dict
    env: object
    requests: int
    specs: dict
    fitted: dict  # name -> a function that fits (once) and returns the policy

    @property
    def families(self) -> list[str]:
        return sorted(self.by_family)


# -- stage 1: read and check every input ---------------------------------------------
def plan(args: EvalArgs) -> EvalPlan:
    from rich.progress import track

    from agents.best_fixed import find_best_fixed, find_best_fixed_by_context
    from agents.ppo import check_run_dir, run_scenario_path
    from envs import OffloadEnv
    from sim import load_scenario
    from traces.sets import group_by_family, load_directory, load_families

    if "ppo" in args.names:
        run, _, _ = flagged("--policy", check_run_dir, args.policy)
        scenario = load_scenario(args.scenario or run_scenario_path(run))
    else:
        scenario = load_scenario(args.scenario)
    scenario.check_references()  # model, data and profile together, before any work
    if is_fleet(scenario):
        flagged("--single-policy", check_run_dir, args.single_policy)
    if args.traces is not None:
        found, errors = load_directory(args.traces)
        by_family = group_by_family(found)
        train_by_family = by_family  # best_fixed then picks on the given folder itself
    else:
        by_family, errors = load_families(args.trace_source, split="test")
        train_by_family, _ = load_families(args.trace_source, split="train")
    for err in errors:
        console.print(f"[yellow]skipped bad trace:[/] {err}")
    requests = args.requests or scenario.workload.episode_requests
    all_traces = [t for fam in sorted(by_family) for t in by_family[fam]]
    env = OffloadEnv(scenario, all_traces, sample_split="test", episode_requests=requests)
    train = [t for f in train_by_family.values() for t in f]
    train_env = OffloadEnv(scenario, train, sample_split="val", episode_requests=requests)
    b = scenario.battery
    specs = episode_specs(by_family, args.episodes, args.seed, (b.initial_min, b.initial_max))
    cached: dict = {}

    def fitted(key: str, search, description: str):
        """A baseline fitted on the training traces, searched once for all families."""

        def get():
            if key not in cached:
                cached[key] = search(
                    train_env, train, episodes=args.best_fixed_episodes, seed=args.seed + 99,
                    progress=lambda xs: track(xs, description=description),
                )  # fmt: skip
            return cached[key]

        return get

    baselines = {
        "best_fixed": fitted("best_fixed", lambda *a, **kw: find_best_fixed(*a, **kw)[0],
                             "best fixed action (train traces)"),
        "best_fixed_by_context": fitted("best_fixed_by_context", find_best_fixed_by_context,
                                        "best fixed action per context"),
    }  # fmt: skip
    p = EvalPlan(args, scenario, by_family, env, requests, specs, baselines)
    # Refuse a run made for another scenario before anything runs.
    if is_fleet(scenario):
        fleet_ppo_policies(p)
    elif "ppo" in args.names:
        build_policies(["ppo"], env, args.policy, None, args.seed, *baselines.values())
        compared_run(p)
    return p


def compared_run(p: EvalPlan) -> dict:
    """``--compare-run`` as ``{row name: policy}`` (empty without it), loaded and so
    checked against the scenario like ``--policy``."""
    if p.args.compare_run is None:
        return {}
    from agents.ppo import load_ppo
    from telemetry.observation import OBS_DIM

    s = p.env.system
    policy = load_ppo(
        p.args.compare_run,
        nvec=p.env.action_space.nvec.tolist(),
        obs_dim=OBS_DIM,
        model_hash=s.profile.model_hash,
        levels_by_cut=s.levels_by_cut,
        variants=s.scenario.variants,
    )
    policy.name = p.args.compare_name
    return {policy.name: policy}


def flagged(flag: str, check, *args):
    """``check(*args)``, its input error prefixed with the flag that named the input."""
    from settings.tables import InputError

    try:
        return check(*args)
    except InputError as exc:
        raise type(exc)(f"{flag} {exc}") from None


def is_fleet(scenario) -> bool:
    return scenario.fleet.devices > 1 or bool(scenario.fleet.sizes)


# -- fleets: several sizes sharing one cloud ------------------------------------------------
# Not in a fleet: the clairvoyant references search one device's simulator, and the
# energy-minimising Neurosurgeon needs the radio of one trace family.
FLEET_EXCLUDED = (*ORACLES, "planner_device", "neurosurgeon_energy")


def fleet_ppo_policies(p: EvalPlan) -> dict:
    """The fleet-trained PPO (``--policy``, which observes its answers' server queueing
    time too) and the single-device one (``--single-policy``), as ``(policy, obs_dim)``."""
    from agents.ppo import load_ppo, read_run_config
    from telemetry.observation import OBS_DIM

    s = p.env.system
    out = {}
    runs = {"ppo_single": ("--single-policy", p.args.single_policy)}
    if "ppo" in p.args.names:
        runs = {"ppo": ("--policy", p.args.policy), **runs}
    for name, (flag, run) in runs.items():
        obs_dim = int(read_run_config(run).get("obs_dim", OBS_DIM))
        load = partial(
            load_ppo, nvec=p.env.action_space.nvec.tolist(), obs_dim=obs_dim,
            model_hash=s.profile.model_hash, levels_by_cut=s.levels_by_cut,
            variants=s.scenario.variants,
        )  # fmt: skip
        policy = flagged(flag, load, run)  # a run of other variants names its flag
        policy.name = name
        out[name] = (policy, obs_dim)
    return out


def evaluate_fleet(p: EvalPlan) -> int:
    from rich.progress import Progress

    from agents.fleet_eval import evaluate_fleets, paired, plot_fleets
    from telemetry.observation import OBS_DIM

    args, scenario = p.args, p.scenario
    names = [n for n in args.names if n not in FLEET_EXCLUDED and n != "ppo"]
    policies = fleet_ppo_policies(p)
    built = build_policies(names, p.env, args.policy, None, args.seed,
                           p.fitted["best_fixed"], p.fitted["best_fixed_by_context"])  # fmt: skip
    policies.update({name: (policy, OBS_DIM) for name, policy in built.items()})
    sizes = sorted(scenario.fleet.sizes or (scenario.fleet.devices,))
    traces = [t for fam in sorted(p.by_family) for t in p.by_family[fam]]
    with Progress(console=console) as progress:
        task = progress.add_task("fleet episodes", total=len(sizes) * args.episodes * len(policies))
        results = evaluate_fleets(scenario, traces, policies, sizes, args.episodes, args.seed,
                                  p.requests, progress=lambda: progress.advance(task))  # fmt: skip
    deadline = scenario.workload.deadline_s
    comparisons = {}
    for n in sizes:
        table = Table(title=f"{n} devices sharing the cloud ({args.episodes} fleet episodes)")
        for col in ("policy", "reward ±95%", "acc", "p50 ms", "p95 ms", "miss", "offload",
                    "server queue ms"):  # fmt: skip
            table.add_column(col, justify="left" if col == "policy" else "right")
        ranked = sorted(results[n], key=lambda k: -results[n][k]["reward"])
        for name in ranked:
            r = results[n][name]
            table.add_row(
                name, f"{r['reward']:.3f} ± {r['reward_ci95']:.3f}", f"{r['accuracy']:.3f}",
                f"{r['latency_p50_ms']:.0f}", f"{r['latency_p95_ms']:.0f}",
                f"{r['deadline_miss_rate']:.3f}", f"{r['offload_fraction']:.2f}",
                f"{r['server_queue_ms']:.1f}",
            )  # fmt: skip
        console.print(table)
        lead = "ppo" if "ppo" in results[n] else "ppo_single"
        comparisons[n] = {
            other: dict(zip(("difference", "ci95"), paired(results[n], lead, other), strict=True))
            for other in results[n]
            if other != lead
        }
    payload = {
        "fleet_sizes": sizes,
        "episodes_per_size": args.episodes,
        "requests_per_device": p.requests,
        "seed": args.seed,
        "capacity": scenario.capacity.__dict__,
        "cloud": scenario.cloud,
        "results": {str(n): results[n] for n in sizes},
        "ppo_vs": {str(n): comparisons[n] for n in sizes},
        "policy_run": str(args.policy) if "ppo" in args.names else None,
        "single_policy_run": str(args.single_policy),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fleet.json").write_text(json.dumps(payload, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
    if not args.no_plots:
        plot_fleets(results, deadline, args.out / "fleet.png")
    console.print(f"wrote {args.out / 'fleet.json'}" + ("" if args.no_plots else
                  f" and {args.out / 'fleet.png'}"))  # fmt: skip
    return 0


# -- stage 2: every policy on the same episodes --------------------------------------
def run_policies(p: EvalPlan) -> tuple[dict[str, dict], dict[str, float]]:
    from agents.rollout import run_many

    results: dict[str, dict] = {}
    timings: dict[str, float] = {}
    for i, family in enumerate(p.families):
        radio = p.env.system.radio(family)
        policies = build_policies(
            p.args.names, p.env, p.args.policy, radio, p.args.seed,
            p.fitted["best_fixed"], p.fitted["best_fixed_by_context"],
        )  # fmt: skip
        policies.update(compared_run(p))
        for name, policy in policies.items():
            t0 = time.perf_counter()
            res = run_many(p.env, policy, p.specs[family])
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
            res["episode"] = res["episode"] + 10_000 * i
            if name in results:
                results[name] = {k: np.concatenate([results[name][k], res[k]]) for k in res}
            else:
                results[name] = res
        console.print(
            f"evaluated {family}: {len(p.specs[family])} episodes x {len(policies)} policies"
        )
    return results, timings


# -- stage 3: summaries, overall and per family ---------------------------------------
def summarise_all(p: EvalPlan, results: dict) -> dict[str, dict]:
    from agents.metrics import subset, summarise

    cap = p.env.system.battery_capacity_j
    w_acc = p.scenario.reward.accuracy
    summary: dict[str, dict] = {
        "overall": {n: summarise(r, cap, w_acc) for n, r in results.items()}
    }
    for fam in p.families:
        summary[fam] = {
            n: summarise(subset(r, r["family"] == fam), cap, w_acc) for n, r in results.items()
        }
    return summary


def gap_sentence(share: float, reference: str) -> str:
    """``sim.metrics.gap_closed`` in words: 0% is the best heuristic's reward, 100%
    ``reference``'s, and a negative share means PPO is below the heuristic."""
    if share != share:  # nan: the reference is not above the heuristic
        return f"{reference} does not beat the best heuristic here; there is no gap to close"
    if share < 0:
        return (
            f"PPO is below the best heuristic, so it closes none of the gap to {reference} "
            f"({share:.1%} on a scale where the heuristic is 0% and {reference} 100%)"
        )
    return f"PPO closes {share:.1%} of the gap from the best heuristic to {reference}"


def print_noise_share(p: EvalPlan, results: dict) -> None:
    """Where the profile offers activation noise: the share of each policy's offloaded
    requests that it sent noised."""
    by_cut = p.env.system.profile.codecs_by_cut
    if not any(name.startswith("noise") for names in by_cut for name in names):
        return
    shares = {
        name: sum(v for k, v in metrics.codec_share(res, by_cut).items() if k.startswith("noise"))
        for name, res in results.items()
    }
    listed = ", ".join(f"{name} {share:.0%}" for name, share in shares.items())
    console.print(f"offloaded requests sent with activation noise: {listed}")


def print_variant_share(p: EvalPlan, results: dict) -> None:
    """Where the scenario offers model variants: each policy's share of device-side
    requests under each variant."""
    names = p.env.system.scenario.variants
    if len(names) < 2:
        return
    for name, res in results.items():
        shares = metrics.variant_share(res, names)
        listed = ", ".join(f"{v} {share:.0%}" for v, share in shares.items())
        console.print(f"{name}: blocks on the device run as {listed}")


def which_run_is_which(args: EvalArgs) -> str:
    """One line naming the two PPO rows and what each was trained for."""
    from agents.ppo import read_run_config

    def trained(run: Path) -> str:
        steps = read_run_config(run).get("total_timesteps")
        return f"{steps:,} decisions" if isinstance(steps, int) else "an unrecorded budget"

    return (
        f"ppo is {args.policy} (trained for {trained(args.policy)}); {args.compare_name} is "
        f"{args.compare_run} (trained for {trained(args.compare_run)}). PPO keeps improving "
        "for hundreds of thousands of decisions (its eval_curve.png), so a short training "
        "trails a long one."
    )


def heuristic_names(summary: dict) -> list[str]:
    """The literature's rules and the single best fixed action: what the gap is
    measured from (best_fixed_by_context, a table per radio and battery band, apart)."""
    apart = ("ppo", *ORACLES, "random", "best_fixed_by_context")
    return [n for n in summary["overall"] if n not in apart and not n.startswith("ppo_")]


# -- stage 4: the tables and the gap --------------------------------------------------
def report(p: EvalPlan, summary: dict, results: dict) -> None:
    for fam in p.families:
        print_table(f"family {fam} (test traces: {len(p.by_family[fam])})", summary[fam])
    print_table("overall", summary["overall"])
    if "best_fixed" in p.args.names:
        act = p.fitted["best_fixed"]().act(np.zeros(1))
        variant = f", variant {p.env.system.scenario.variants[act[3]]}" if len(act) == 4 else ""
        console.print(
            f"best fixed action on the training traces: cut {act[0]}, threshold index "
            f"{act[1]}, level {act[2]}{variant}"
        )
    if p.args.compare_run is not None:
        console.print(which_run_is_which(p.args))
    print_noise_share(p, results)
    print_variant_share(p, results)
    heuristics = heuristic_names(summary)
    if "ppo" not in summary["overall"] or not heuristics:
        return
    overall = summary["overall"]
    best_h = max(heuristics, key=lambda n: overall[n]["reward_mean"])
    ppo_r, best_r = overall["ppo"]["reward_mean"], overall[best_h]["reward_mean"]
    line = f"PPO {ppo_r:.4f} vs best heuristic {best_h} {best_r:.4f}"
    # The headline gap: to the label-blind clairvoyant planner, the best any controller
    # that cannot see each image's answer could do with a perfect forecast. The oracle,
    # which sees the answers, stays reported.
    if "planner_label_blind" in overall:
        plan_r = overall["planner_label_blind"]["reward_mean"]
        summary["gap_closed"] = metrics.gap_closed(ppo_r, best_r, plan_r)
        line += (
            f"; label-blind planner {plan_r:.4f}: "
            + gap_sentence(summary["gap_closed"], "the label-blind planner")
            + " (the headline)"
        )
    if "oracle" in overall:
        oracle_r = overall["oracle"]["reward_mean"]
        summary["gap_closed_oracle"] = metrics.gap_closed(ppo_r, best_r, oracle_r)
        closed = gap_sentence(summary["gap_closed_oracle"], "the oracle")
        line += f"\noracle {oracle_r:.4f}: {closed}"
        # The oracle's choices scored at calibrated accuracy: what is left of its lead
        # without its knowledge of each image's answer (see sim/metrics.py).
        calibrated = overall["oracle"]["reward_calibrated"]
        line += (
            f"\noracle at calibrated accuracy {calibrated:.4f}: knowing each image's "
            f"answer is worth {oracle_r - calibrated:.4f} of its lead"
        )
    if "best_fixed_by_context" in overall:
        ctx_r = overall["best_fixed_by_context"]["reward_mean"]
        line += f"\nPPO {ppo_r:.4f} vs best_fixed_by_context {ctx_r:.4f}"
    console.print(line)
    summary["ppo_vs"] = compare_ppo(results, summary, p.families, heuristics)


# -- stage 5: files ------------------------------------------------------------------
def cloud_costs(p: EvalPlan) -> dict:
    """The cloud tail's bill for a VM, functions and their hybrid at several rates
    (``agents.cloud_report``, from cut 0), printed and kept in results.json."""
    from agents.cloud_report import cost_rows, print_rows

    report = cost_rows(p.env.system, cut=0)
    print_rows(report)
    return report


def write_outputs(p: EvalPlan, summary: dict, results: dict, timings: dict) -> None:
    from agents import plots
    from agents.cloud_report import plot_costs

    args, out = p.args, p.args.out
    out.mkdir(parents=True, exist_ok=True)
    with (out / "summary.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        keys = list(next(iter(summary["overall"].values())))
        writer.writerow(["group", "policy", *keys])
        for group in ["overall", *p.families]:
            for name, row in summary[group].items():
                writer.writerow([group, name, *[row[k] for k in keys]])
    n_cuts, by_cut = p.env.system.n_cuts, p.env.system.profile.codecs_by_cut
    for name, res in results.items():
        summary["overall"][name]["cut_share"] = metrics.cut_share(res, n_cuts)
        summary["overall"][name]["codec_share"] = metrics.codec_share(res, by_cut)
        if len(p.env.system.scenario.variants) > 1:
            summary["overall"][name]["variant_share"] = metrics.variant_share(
                res, p.env.system.scenario.variants
            )
        for fam in p.families:
            summary[fam][name]["cut_share"] = metrics.cut_share(
                {"cut": res["cut"][res["family"] == fam]}, n_cuts
            )
    payload = {
        "policies": summary["overall"],
        "families": {f: summary[f] for f in p.families},
        "gap_closed": summary.get("gap_closed"),
        "gap_closed_oracle": summary.get("gap_closed_oracle"),
        "ppo_vs": summary.get("ppo_vs"),
        "episodes_per_family": args.episodes,
        "requests_per_episode": p.requests,
        "seed": args.seed,
        "traces": str(args.traces) if args.traces else f"{args.trace_source}:test",
        "policy_run": str(args.policy) if "ppo" in args.names else None,
        "seconds_per_policy": {k: round(v, 2) for k, v in timings.items()},
        "cloud_costs": cloud_costs(p),
    }
    written = [out / "summary.csv", out / "results.json"]
    (out / "results.json").write_text(json.dumps(payload, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
        written.append(args.json)
    if not args.no_plots:
        plots.latency_cdf(results, p.scenario.workload.deadline_s, out / "latency_cdf.png")
        plots.reward_bars(summary, p.families, out / "reward.png")
        shown = [n for n in ("ppo", "oracle", "spinn", "best_fixed") if n in results]
        if shown:  # none of them evaluated: no such plot
            plots.actions_vs_bandwidth(
                results, shown, p.env.action_space.nvec, out / "actions_vs_bandwidth.png"
            )
        plots.pareto(summary["overall"], out / "pareto.png")
        # PPO beside the best heuristic of this run (and the oracle): where each offloads.
        heuristics = heuristic_names(summary)
        overall = summary["overall"]
        best_h = max(heuristics, key=lambda n: overall[n]["reward_mean"], default=None)
        heat = list(dict.fromkeys(n for n in ("ppo", "oracle", best_h) if n in results))
        plots.offload_heatmap(results, heat, out / "offload_by_bandwidth_battery.png")
        plot_costs(payload["cloud_costs"], out / "cloud_costs.png")
    listed = ", ".join(str(w) for w in written)
    console.print(f"wrote {listed}" + ("" if args.no_plots else f" and plots in {out}"))


def evaluate(args: EvalArgs) -> int:
    p = plan(args)
    if is_fleet(p.scenario):
        return evaluate_fleet(p)
    results, timings = run_policies(p)
    summary = summarise_all(p, results)
    report(p, summary, results)
    write_outputs(p, summary, results, timings)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(
        lambda: evaluate(parse(EvalArgs, argv, "Evaluate policies on the same requests."))
    )


if __name__ == "__main__":
    sys.exit(main())
