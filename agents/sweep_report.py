"""What a finished sweep leaves: each trial's outcome, the table, the plot, the JSON and
the best trial copied to ``runs/NAME/best/`` (ready for ``evaluate.py`` and export).

A trial's outcome is read from its own run directory, the same files ``train.py``
leaves: its score is the best value of the sweep's metric on its validation curve
(``eval_curve.csv``), ``completed`` when the run finished (``model.zip`` exists),
``stopped`` when the scheduler ended it early (ASHA), ``failed`` with the error Ray
caught, or ``unfinished`` when the sweep was interrupted before it ended.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from agents.sweep_spec import METRICS, SweepSpec


@dataclass
class TrialSummary:
    name: str
    config: dict
    validation_reward: float | None  # the best validation reward (best_model.zip's)
    score: float | None  # the best value of the sweep's metric
    status: str  # completed, stopped, failed or unfinished
    decisions: int  # PPO steps trained (the last validation's)
    error: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def curve_rows(run: Path) -> list[dict]:
    path = run / "eval_curve.csv"
    if not path.is_file():
        return []
    with path.open() as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def error_line(error: BaseException | str | None) -> str | None:
    """The line of a trial's error that says what went wrong (Ray wraps the worker's
    exception in its traceback; its last ``Type: message`` line is the cause)."""
    if error is None:
        return None
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    causes = [line for line in lines if ": " in line and not line.startswith("File ")]
    return (causes or lines or [type(error).__name__])[-1]


def summarise_trial(run: Path, config: dict, metric: str, error=None,
                    ended: bool = True) -> TrialSummary:  # fmt: skip
    """A trial from its run directory; ``ended``: Tune finished with it (not so for a
    trial still running or waiting when the sweep was interrupted)."""
    rows = curve_rows(run)
    column = METRICS[metric]
    reward = max((r["mean_reward"] for r in rows), default=None)
    score = max((r[column] for r in rows), default=None)
    if error is not None:
        status = "failed"
    elif not ended:
        status = "unfinished"
    elif (run / "model.zip").is_file():
        status = "completed"
    else:
        status = "stopped"
    decisions = int(rows[-1]["timesteps"]) if rows else 0
    return TrialSummary(run.name, config, reward, score, status, decisions, error_line(error))


def best_trial(trials: list[TrialSummary]) -> TrialSummary | None:
    scored = [t for t in trials if t.score is not None and t.status != "failed"]
    return max(scored, key=lambda t: t.score) if scored else None


def copy_best(sweep_dir: Path, best: TrialSummary) -> Path:
    """The best trial's run (without its checkpoints) as ``runs/NAME/best``; its
    ``config.json`` records which trial it was and with what settings."""
    from agents.run_files import copy_run

    note = {"trial": best.name, "sampled": best.config, "score": best.score}
    return copy_run(sweep_dir / best.name, sweep_dir / "best", "sweep", note)


def sweep_json(spec: SweepSpec, trials: list[TrialSummary], best: TrialSummary | None,
               seconds: float, interrupted: bool) -> dict:  # fmt: skip
    return {
        "sweep": spec.to_json(),
        "metric": spec.metric,
        "seconds": round(seconds, 1),
        "interrupted": interrupted,
        "trials": [t.to_json() for t in trials],
        "best": None if best is None else {**best.to_json(), "run": "best"},
    }


def print_table(trials: list[TrialSummary], metric: str, best: TrialSummary | None) -> None:
    from rich.console import Console
    from rich.table import Table

    keys = sorted({k for t in trials for k in t.config})
    table = Table(title=f"sweep trials (metric: {metric}, maximised)")
    for col in ("trial", *keys, "decisions", metric, "status"):
        table.add_column(col, justify="left" if col in ("trial", "status") else "right")
    for t in trials:
        cells = [_cell(t.config.get(k)) for k in keys]
        score = "-" if t.score is None else f"{t.score:.4f}"
        mark = " *" if best is not None and t.name == best.name else ""
        table.add_row(t.name + mark, *cells, str(t.decisions), score, t.status)
    console = Console()
    if not console.is_terminal:  # a log file: no terminal width to fit
        console = Console(width=200)
    console.print(table)
    for t in trials:
        if t.error is not None:
            console.print(f"{t.name} failed: {t.error}", markup=False)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def plot_trials(sweep_dir: Path, trials: list[TrialSummary], metric: str, png: Path) -> None:
    """Left: every trial's validation curve (the metric against decisions), coloured
    by outcome; right: each trial's score, best first, failed trials marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"completed": "tab:blue", "stopped": "tab:orange", "failed": "tab:red",
               "unfinished": "tab:gray"}  # fmt: skip
    column = METRICS[metric]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for t in trials:
        rows = curve_rows(sweep_dir / t.name)
        if rows:
            left.plot([r["timesteps"] for r in rows], [r[column] for r in rows], marker=".",
                      color=colours[t.status], alpha=0.8)  # fmt: skip
    for status, colour in colours.items():
        left.plot([], [], color=colour, label=status)
    left.set_xlabel("decisions trained")
    left.set_ylabel(f"{metric} (validation traces)")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    order = sorted(trials, key=lambda t: np.inf if t.score is None else -t.score)
    for i, t in enumerate(order):
        if t.score is None:  # failed before its first validation: marked at the bottom
            right.plot(i, 0.03, marker="x", color=colours[t.status], markersize=9,
                       transform=right.get_xaxis_transform())  # fmt: skip
        else:
            right.plot(i, t.score, marker="o", color=colours[t.status], markersize=8)
    right.set_xticks(range(len(order)), [t.name.removeprefix("trial_") for t in order],
                     rotation=90 if len(order) > 8 else 0, fontsize=8)  # fmt: skip
    right.set_xlim(-0.5, len(order) - 0.5)
    right.set_xlabel("trial (best first)")
    right.set_ylabel(f"best {metric}")
    right.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{sweep_dir.name}: {len(trials)} trials")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
