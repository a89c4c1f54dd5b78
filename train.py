"""Train a PPO controller on Offload-v0.

    python train.py [--name NAME] [--timesteps N] [--seed S] [--config FILE]
                    [--scenario FILE] [--trace-source auto|shared|builtin|synthetic]
                    [--resume] [--overwrite] [--seeds 0,1,2]

Hyperparameters live in ``agents/hyperparams.toml``; ``--config`` overrides any of
them, flags override both. Everything of a run lands in ``runs/NAME/``; Ctrl-C saves
a checkpoint and says how to resume. The run itself (its stages, what it writes) is
``agents.train_run``.
"""

from __future__ import annotations

import sys

from agents.train_run import TrainArgs, train_one, train_seeds
from settings.cli import parse, run_cli


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        args = parse(TrainArgs, argv, "Train PPO on Offload-v0.")
        return train_seeds(args) if args.seeds is not None else train_one(args)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
