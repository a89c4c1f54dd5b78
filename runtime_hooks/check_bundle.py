"""Check a device bundle: its files against its manifest, and its decisions against
the run it was exported from.

    python -m runtime_hooks.check_bundle out/bundle [--run runs/default]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from runtime_hooks.bundle import check_bundle
from runtime_hooks.policy_file import NumpyPolicy, PolicyFileError
from settings.cli import UsageError, run_cli, summary_of, within

MAX_OBSERVATIONS = 1_000_000
_OBSERVATIONS_WHY = "each is a step of the run's environment and both policies' decision"


def check_against_run(folder: str | Path, run: str | Path, observations: int = 1000):
    """The bundle's hashes, its model against the run's, and how the bundle's policy
    decides against the run's model on ``observations`` observations of the run's
    scenario (an ``export.Agreement``, faithful for a bundle exported from this run)."""
    from runtime_hooks.export import agreement, env_observations, export_run

    manifest = check_bundle(folder)
    _, ppo, env = export_run(run)
    if manifest["model_hash"] != env.system.profile.model_hash:
        raise PolicyFileError(
            f"{folder}: bundle for model {manifest['model_hash']}, the run {run} is of model "
            f"{env.system.profile.model_hash}"
        )
    bundled = NumpyPolicy.load(Path(folder) / "policy.npz")
    return agreement(bundled, ppo, env_observations(env, observations))


def main(argv: list[str] | None = None) -> int:
    """``python -m runtime_hooks.check_bundle DIR [--run RUN]``: check a bundle's files
    against its manifest and, given its run, its decisions against the run's model.
    Exit 1 when they differ; any input error (a bundle or run missing, changed or of
    another kind, ``--observations`` out of range) is one ``error:`` line, exit 2."""
    import argparse

    parser = argparse.ArgumentParser(description=summary_of(main.__doc__))
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--run", type=Path, help="the training run it was exported from")
    parser.add_argument(
        "--observations",
        type=int,
        default=1000,
        help=f"observations to compare the decisions on, 1..{MAX_OBSERVATIONS:,}",
    )
    args = parser.parse_args(argv)

    def run() -> int:
        try:
            within(1, MAX_OBSERVATIONS, _OBSERVATIONS_WHY)(args.observations)
        except ValueError as exc:
            raise UsageError(f"--observations: {exc}") from None
        if args.run is None:
            manifest = check_bundle(args.bundle)
            print(f"{args.bundle}: {len(manifest['files'])} files match their SHA-256")
            return 0
        # A missing, changed or fleet run is an InputError naming it: run_cli says it.
        agree = check_against_run(args.bundle, args.run, args.observations)
        source = json.loads((args.bundle / "manifest.json").read_text()).get("source_run")
        if not agree.faithful and source and Path(source).resolve() != args.run.resolve():
            print(
                f"error: {args.bundle} was exported from {source}, not {args.run}: check it "
                f"against --run {source}",
                file=sys.stderr,
            )
        print(
            f"{args.bundle}: files match; decides as {args.run} on {agree.sentence()} observations"
        )
        return 0 if agree.faithful else 1

    return run_cli(run)


if __name__ == "__main__":
    raise SystemExit(main())
