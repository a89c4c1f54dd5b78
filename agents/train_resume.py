"""What a resumed run trains with: its own scenario, hyperparameters, traces and seed.

A run records them in ``config.json`` when it starts. ``--resume`` takes them from
there, whatever ``agents/hyperparams.toml`` or the default scenario say today, and
refuses a flag that would change them (naming the run's value and the asked one):
resuming against another scenario would rewrite the run's config and leave it with
contradictory action spaces. Only ``--timesteps`` may differ: it says how far to go.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agents.hyperparams import Hyperparams, build_hyperparams, load_hyperparams, merge_tables
from agents.ppo import RunError, run_scenario_path
from agents.run_files import sha256


@dataclass(frozen=True)
class ResumeSettings:
    """The run's own settings, with the step count asked for."""

    hp: Hyperparams
    scenario: Path | None  # None: the built-in default scenario
    trace_source: str
    seed: int


def _changed_keys(asked: dict, own: dict) -> list[str]:
    return [
        f"[{section}].{key} (run: {own[section].get(key)!r}, asked: {value!r})"
        for section, values in asked.items()
        for key, value in values.items()
        if (section, key) != ("ppo", "total_timesteps") and own[section].get(key) != value
    ]


def _own_scenario(run: Path, previous: dict, asked: Path | None) -> Path | None:
    recorded = run_scenario_path(run)
    own = Path(recorded).resolve() if recorded is not None else None
    if asked is not None and Path(asked).resolve() != own:
        raise RunError(
            f"--scenario {asked}: {run} was trained on "
            f"{own if own is not None else 'the built-in default scenario'}; a resume "
            "continues the run's own scenario (drop --scenario, or train a new run)"
        )
    if own is not None:
        if not own.is_file():
            raise RunError(f"{run}: its scenario {own} is missing; it cannot be resumed")
        digest = previous.get("scenario_sha256")
        if digest is not None and sha256(own) != digest:
            raise RunError(
                f"{own}: changed since {run} was trained on it (SHA-256 differs from "
                "config.json's scenario_sha256); train a new run on the changed scenario"
            )
    return own


def resume_settings(args, run: Path, previous: dict, updates: dict) -> ResumeSettings:
    """The settings of ``run`` (its ``config.json`` already read as ``previous``) for
    a resume with ``args`` (``TrainArgs``); ``updates`` are the flags' hyperparameters."""
    own_tables = previous.get("config")
    if not isinstance(own_tables, dict):
        raise RunError(f"{run / 'config.json'}: records no hyperparameters; it cannot be resumed")
    own_hp = build_hyperparams(own_tables, str(run / "config.json"))
    own = own_hp.to_dict()
    if args.config is not None or updates["ppo"].keys() - {"total_timesteps"} or updates["eval"]:
        asked = load_hyperparams(args.config, updates).to_dict()
        changed = _changed_keys(asked, own)
        if changed:
            raise RunError(
                f"{run} was trained with other hyperparameters than asked: "
                + "; ".join(changed)
                + ". A resume keeps the run's own (only --timesteps may "
                "change); train a new run for others"
            )
    total = updates["ppo"].get("total_timesteps", own["ppo"]["total_timesteps"])
    steps = {"ppo": {"total_timesteps": total}}
    hp = build_hyperparams(merge_tables(own, steps, "command line"), str(run / "config.json"))
    source = previous.get("trace_source", args.trace_source)
    if args.trace_source not in ("auto", source):
        raise RunError(
            f"--trace-source {args.trace_source}: {run} was trained on {source!r} traces; "
            "drop --trace-source to resume it, or train a new run"
        )
    seed = int(previous.get("seed", args.seed))
    if args.seed not in (0, seed):
        raise RunError(
            f"--seed {args.seed}: {run} was trained with seed {seed}; drop --seed to resume "
            "it, or train a new run"
        )
    return ResumeSettings(hp, _own_scenario(run, previous, args.scenario), source, seed)
