"""The cloud's service time per batch: the real server's tail, timed at each batch size.

    python -m runtime_hooks.measure_cloud [--scenario S] [--batch-sizes 1,2,4,8,16,32,64]
                                     [--repeats 15] [--out FILE]

A shared cloud (``sim.cloud``) serves a fleet's requests in batches: a worker
takes up to ``max_batch`` waiting requests of one cut and runs their tail at once. How
long a batch of ``b`` takes is measured here, not assumed: ``TailRunner.run`` (the
exact code the server runs) on real test inputs carried to each cut by the model's
head, one torch thread (a worker is one core), median of ``--repeats`` runs. The JSON
keeps the model hash, the machine and the command, so a scenario that names it gets a
clear error when it belongs to another model. The simulator divides these host times
by the cloud's ``speedup`` and adds its ``overhead_s``, exactly as for batch 1.

Batch sizes go up to ``MAX_BATCH`` (a scenario's largest ``[capacity].max_batch``; the
simulator extrapolates past the largest size measured) and ``--repeats`` up to
``MAX_REPEATS``: every cut at every size is timed that many times.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from profiles.cloud_batches import DEFAULT_OUT, FORMAT, rising_from_one
from profiles.host import describe_machine, median_time
from settings.cli import (
    check_options,
    int_list,
    option,
    output_file,
    parse,
    run_cli,
    summary_of,
    within,
)
from settings.tables import InputError


def measure(scenario=None, batch_sizes=(1, 2, 4, 8, 16, 32, 64), repeats: int = 15) -> dict:
    """Time the server's tail from every cut at every batch size."""
    import torch

    from profiles.multiexit import data_for_profile, head, to_model_input
    from runtime_hooks.tail import load_runner

    runner = load_runner(scenario, threads=1)
    profile, model = runner.profile, runner.model
    spec_inputs = data_for_profile(profile, _spec(model))["test"].inputs[: max(batch_sizes)]
    x = torch.from_numpy(to_model_input(spec_inputs))
    seconds = []
    for cut in range(profile.n_blocks):
        with torch.inference_mode():
            at_cut = head(model, cut, x).numpy()
        row = []
        for b in batch_sizes:
            batch = np.ascontiguousarray(np.resize(at_cut, (b, *at_cut.shape[1:])))
            row.append(median_time(lambda bt=batch, c=cut: runner.run(c, bt), repeats, 3))
        seconds.append(row)
    return {
        "format": FORMAT,
        "model_hash": profile.model_hash,
        "batch_sizes": list(batch_sizes),
        "seconds": seconds,
        "torch_threads": 1,
        "repeats": repeats,
        "machine": describe_machine(),
        "torch": torch.__version__,
        "what": "median host seconds of TailRunner.run(cut, batch) per cut (rows) "
        "and batch size (columns)",
        "command": "python -m " + __spec__.name + " " + " ".join(sys.argv[1:]) if __spec__ else "",
    }


def _spec(model):
    from profiles.multiexit import check_model

    return check_model(model)


MAX_BATCH = 4096  # sim.capacity.Capacity.max_batch's upper limit
MAX_REPEATS = 1000
_BATCH_WHY = (
    "the largest [capacity].max_batch of a scenario; a batch holds that many inputs at "
    "every cut in memory, and the simulator extrapolates past the largest size measured"
)
_REPEATS_WHY = "every cut at every batch size is timed that many times"


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int_list(1, MAX_BATCH, _BATCH_WHY)(text))
    except ValueError as exc:
        raise InputError(f"--batch-sizes: {exc}") from None
    if not rising_from_one(sizes):
        raise InputError(f"--batch-sizes: must rise from 1 (e.g. 1,2,4,8), got {text!r}")
    return sizes


@dataclass
class MeasureArgs:
    scenario: Path | None = option(None, "scenario whose model to time", type=Path)
    batch_sizes: str = option("1,2,4,8,16,32,64", "batch sizes, rising from 1")
    repeats: int = option(15, "timed runs per point", check=within(3, MAX_REPEATS, _REPEATS_WHY))
    out: Path = option(DEFAULT_OUT, "JSON to write", type=Path, check=output_file)

    def __post_init__(self) -> None:
        check_options(self)
        _sizes(self.batch_sizes)


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        args = parse(MeasureArgs, argv, summary_of(__doc__))
        result = measure(args.scenario, _sizes(args.batch_sizes), args.repeats)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"{'cut':>4} " + " ".join(f"{b:>8}" for b in result["batch_sizes"]))
        for cut, row in enumerate(result["seconds"]):
            print(f"{cut:>4} " + " ".join(f"{t * 1e3:>7.2f}m" for t in row))
        print(f"wrote {args.out}")
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
