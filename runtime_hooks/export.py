"""Export a trained PPO run into a numpy-only policy file.

    python -m runtime_hooks.export runs/default --out runs/default/policy.npz [--final]

The file (see ``runtime_hooks.policy_file``) runs without torch or Stable-Baselines3.
After writing it, the exporter replays observations from the environment through
both the SB3 model and the exported file and reports how many actions agree.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime_hooks.policy_file import NumpyPolicy, PolicyFileError, PolicyMeta, from_sb3
from settings.cli import summary_of


def export_run(run_dir: str | Path, best: bool = True):
    """``(NumpyPolicy, PPOPolicy, OffloadEnv)`` for a run: the exported policy, the SB3
    one it came from, and an environment of the run's scenario to check them on."""
    from agents.ppo import check_run_dir, load_ppo, run_scenario_path
    from envs import OffloadEnv
    from sim import load_scenario
    from telemetry.observation import OBS_DIM

    check_run_dir(run_dir, best)  # a clear error for a missing or incomplete run first
    scenario = load_scenario(run_scenario_path(run_dir))
    if scenario.fleet.devices > 1:
        from agents.ppo import RunError

        raise RunError(
            f"{run_dir}: trained for a fleet of {scenario.fleet.devices} devices sharing a "
            f"cloud ({scenario.source}), observing the server's queueing time too; the "
            "exporter writes single-device policies (runtime_hooks.device, runtime_hooks.fleet "
            "run one per device): export a run trained on a single-device scenario"
        )
    scenario.require_base_model("the exported policy (the device bundle and loop)")
    env = OffloadEnv(scenario, trace_source="auto", trace_split="val")
    s = env.system
    ppo = load_ppo(
        run_dir, env.action_space.nvec, OBS_DIM, best=best, model_hash=s.profile.model_hash
    )
    activation = ppo.model.policy.activation_fn.__name__.lower()
    meta = PolicyMeta(
        nvec=tuple(int(v) for v in env.action_space.nvec),
        thresholds=s.thresholds,
        deadline_s=scenario.workload.deadline_s,
        keep_alive_s=s.cloud.keep_alive_s,
        radios={name: (r.tail_s, r.tail_w) for name, r in s.catalog.radios.items()},
        obs_dim=OBS_DIM,
        activation=activation,
        profile_model_hash=s.profile.model_hash,
        source=str(Path(run_dir)),
    )
    return from_sb3(ppo, meta), ppo, env


def env_observations(env, n: int, seed: int = 0) -> np.ndarray:
    """``n`` observations the env produces under a random policy over the valid
    actions (episodes reseeded)."""
    from envs.wrappers import env_actions

    rng = np.random.default_rng(seed)
    actions = np.asarray(env_actions(env), dtype=np.int64)  # valid at every cut
    out = np.empty((n, env.observation_space.shape[0]), np.float32)
    obs, _ = env.reset(seed=seed)
    for i in range(n):
        out[i] = obs
        action = actions[rng.integers(len(actions))]
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
    return out


# Two float32 networks that multiply in a different order (numpy here, torch in SB3)
# differ by about 1e-6 in a logit; where two actions' logits lie closer than this the
# pick is a coin toss between equals, not a different policy.
TIE_TOLERANCE = 1e-4


@dataclass(frozen=True, kw_only=True)
class Agreement:
    """How an exported policy decides against the model it came from."""

    observations: int
    same: int  # the same action picked
    ties: int  # a different action, but its logit within TIE_TOLERANCE of the pick's

    @property
    def share(self) -> float:
        return self.same / self.observations

    @property
    def faithful(self) -> bool:
        """Every decision the same or a tie: the export computes the model's function."""
        return self.same + self.ties == self.observations

    def sentence(self) -> str:
        ties = f" (+{self.ties} ties within {TIE_TOLERANCE:g} of a logit)" if self.ties else ""
        return f"{self.share:.2%} of {self.observations}{ties}"


def agreement(exported, reference, observations: np.ndarray) -> Agreement:
    """Compare the decisions of an exported policy (it has ``logits`` and ``table``)
    with its reference's on ``observations``. A differing pick counts as a tie when
    both networks' logits of the two actions lie within ``TIE_TOLERANCE`` (a reference
    without ``logits`` forgives nothing): a broken export whose logits collapsed still
    disagrees with the reference's clear preference."""
    rows = {tuple(int(v) for v in row): i for i, row in enumerate(exported.table)}
    reference_logits = getattr(reference, "logits", None)
    same = ties = 0
    for o in observations:
        logits = exported.logits(o)
        mine, theirs = int(logits.argmax()), rows.get(tuple(int(v) for v in reference.act(o)))
        if theirs == mine:
            same += 1
        elif theirs is not None and reference_logits is not None:
            theirs_logits = reference_logits(o)
            close = abs(logits[mine] - logits[theirs]) <= TIE_TOLERANCE
            if close and abs(theirs_logits[mine] - theirs_logits[theirs]) <= TIE_TOLERANCE:
                ties += 1
    return Agreement(observations=len(observations), same=same, ties=ties)


MAX_CHECK = 1_000_000  # observations the exporter replays at most (about a minute)


def _target_problem(run: Path, out: Path | None, bundle: Path | None) -> str | None:
    """Why the exporter must not write where it was told, or ``None``: it replaces a
    policy file or a bundle it wrote before, never another file (a run's model), and
    writes into no training run but the one it exports."""
    from settings.cli import output_dir, output_file, training_run_holding

    for flag, target, check in (("--out", out, output_file), ("--bundle", bundle, output_dir)):
        if target is None:
            continue
        holder = training_run_holding(target)
        if holder is not None and holder != Path(run).resolve():
            return (
                f"{flag} {target}: inside the training run {holder}, not {run}; write into "
                f"{run} or outside any run"
            )
        if holder is None:  # outside every run: a path that can be written
            try:
                check(target)
            except ValueError as exc:
                return f"{flag}: {exc}"
    if out is not None:
        if out.is_dir():
            return f"--out {out}: is a folder; give a file name ending in .npz"
        if out.suffix != ".npz":
            return f"--out {out}: a policy file's name ends in .npz"
        if out.exists():
            try:
                NumpyPolicy.load(out)
            except PolicyFileError:
                return f"--out {out}: exists and is not a policy file; it will not be replaced"
    if bundle is not None:
        if bundle.exists() and not bundle.is_dir():
            return f"--bundle {bundle}: is a file; give a folder"
        if bundle.is_dir() and any(bundle.iterdir()) and not (bundle / "manifest.json").exists():
            return (
                f"--bundle {bundle}: holds files but no bundle manifest; it will not be "
                "written into (give an empty or new folder)"
            )
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=summary_of(__doc__))
    parser.add_argument("run", help="training run directory (runs/NAME)")
    parser.add_argument("--out", type=Path, help="policy file to write (.npz)")
    parser.add_argument("--bundle", type=Path, help="device bundle folder to write (numpy and C)")
    parser.add_argument("--final", action="store_true", help="the final model, not the best")
    parser.add_argument("--check", type=int, default=10_000, help="observations to compare")
    args = parser.parse_args(argv)
    if (args.out is None) == (args.bundle is None):
        parser.error("give one of --out FILE (a policy file) or --bundle DIR (a device bundle)")
    if not 0 <= args.check <= MAX_CHECK:
        parser.error(f"--check: observations to compare, 0..{MAX_CHECK:,}, got {args.check}")
    problem = _target_problem(Path(args.run), args.out, args.bundle)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from settings.tables import InputError
    from sim.scenario import DEFAULT_SCENARIO

    try:
        policy, ppo, env = export_run(args.run, best=not args.final)
    except InputError as exc:  # a missing run, a changed file, a scenario error
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.bundle is not None:
        from agents.ppo import portable_path, run_scenario_path
        from profiles.multiexit import model_for_profile
        from runtime_hooks.bundle import check_bundle, write_bundle

        scenario = env.system.scenario
        model = model_for_profile(env.system.profile, scenario.model)
        manifest = write_bundle(
            policy,
            args.bundle,
            system=env.system,
            # where the run's scenario lies in the project, not this machine's path
            scenario_path=portable_path(run_scenario_path(args.run) or DEFAULT_SCENARIO),
            model=model,
        )
        check_bundle(args.bundle)
        print(
            f"wrote {manifest.parent}: "
            + ", ".join(sorted(p.name for p in manifest.parent.iterdir()))
        )
        path = args.bundle / "policy.npz"
    else:
        from agents.run_files import record_file

        path = policy.save(args.out)
        record_file(path)  # a policy file written into a run joins the run's record
    loaded = NumpyPolicy.load(path)
    print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")
    if not args.check:
        return 0
    agree = agreement(loaded, ppo, env_observations(env, args.check))
    print(f"actions agree with SB3 on {agree.sentence()} environment observations")
    return 0 if agree.faithful else 1


if __name__ == "__main__":
    sys.exit(main())
