"""What a sweep on local Ray costs beyond the training it runs, in one run.

    python -m bench.sweep_overhead [--timesteps 12500] [--trials 4]

1. reference: ``--trials`` ``train.py`` runs of the same settings, two at a time (this
   machine's two cores), as plain processes;
2. the same runs as a sweep (``agents.sweep``: FIFO scheduler, the seed drawn from a
   grid so every trial trains as long as the references) on Ray started locally.

Reports both wall times, their ratio (the sweep's overhead: Ray's start, its workers'
start-up and Tune's bookkeeping) and the trials per hour each reaches. Writes
``bench/results/sweep_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.common import write
from settings.cli import summary_of

ROOT = Path(__file__).resolve().parents[1]


def settings(timesteps: int) -> str:
    freq = max(1, timesteps // 2)
    return (f"[ppo]\ntotal_timesteps = {timesteps}\n\n"
            f"[eval]\nfreq = {freq}\ncheckpoint_freq = {freq}\n")  # fmt: skip


def plain_runs(folder: Path, config: Path, trials: int) -> float:
    """``trials`` train.py runs, two at a time; their wall time."""
    t0 = time.perf_counter()
    pending = list(range(trials))
    while pending:
        batch, pending = pending[:2], pending[2:]
        procs = [subprocess.Popen([sys.executable, "train.py", "--name", f"plain{i}", "--seed",
                                   str(i), "--runs-dir", str(folder), "--config", str(config),
                                   "--no-progress"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for i in batch]  # fmt: skip
        for p in procs:
            if p.wait() != 0:
                raise RuntimeError(f"train.py failed: {p.args}")
    return time.perf_counter() - t0


def sweep_run(folder: Path, sweep: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "agents.sweep", str(sweep), "--name", "sweep",
                    "--runs-dir", str(folder), "--no-progress"], cwd=ROOT, check=True,
                   capture_output=True)  # fmt: skip
    return time.perf_counter() - t0, json.loads((folder / "sweep" / "sweep.json").read_text())


def ray_start() -> float:
    """Seconds ``ray.init()`` takes to start Ray on this machine (and shut it down)."""
    code = ("import time, ray; t = time.perf_counter(); ray.init(include_dashboard=False, "
            "log_to_driver=False, logging_level='WARNING'); print(time.perf_counter() - t); "
            "ray.shutdown()")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=summary_of(__doc__))
    parser.add_argument("--timesteps", type=int, default=12_500)
    parser.add_argument("--trials", type=int, default=4)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = folder / "config.toml"
        config.write_text(settings(args.timesteps))
        sweep = folder / "sweep.toml"
        seeds = ", ".join(str(i) for i in range(args.trials))
        head = '[sweep]\ntrials = 1\nsearch = "random"\nscheduler = "fifo"\n\n'
        space = f"[space]\nseed = {{ grid = [{seeds}] }}\n"
        sweep.write_text(f"{head}{settings(args.timesteps)}\n{space}")
        start = ray_start()
        plain = plain_runs(folder, config, args.trials)
        swept, summary = sweep_run(folder, sweep)
    completed = sum(t["status"] == "completed" for t in summary["trials"])
    table = Table(title=f"{args.trials} runs of {args.timesteps:,} decisions, two at a time")
    for col in ("", "wall (s)", "trials per hour", "ratio"):
        table.add_column(col, justify="right")
    table.add_row("train.py processes", f"{plain:.0f}", f"{3600 * args.trials / plain:.0f}",
                  "1.00")  # fmt: skip
    table.add_row("agents.sweep on local Ray", f"{swept:.0f}",
                  f"{3600 * args.trials / swept:.0f}", f"{swept / plain:.2f}")  # fmt: skip
    Console().print(table)
    print(f"ray.init() on this machine: {start:.1f} s; {completed}/{args.trials} trials completed")
    payload = {"timesteps": args.timesteps, "trials": args.trials, "plain_s": plain,
               "sweep_s": swept, "ratio": swept / plain, "ray_init_s": start,
               "completed": completed}  # fmt: skip
    print("wrote", write("sweep_overhead", payload))
    return payload


if __name__ == "__main__":
    main()
