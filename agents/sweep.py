"""Hyperparameter sweeps on Ray Tune: many ordinary ``train.py`` runs, on one machine or a
Ray cluster.

    python -m agents.sweep SWEEP.toml --name NAME [--address ADDR] [--json FILE]
                           [--runs-dir runs] [--overwrite] [--connect-timeout 30]

The sweep file (``agents.sweep_spec``) says how many trials, the metric, the search
(Optuna's TPE or random), the scheduler (ASHA or FIFO), the fixed settings and the
space. Every trial is a ``train.py`` run in ``runs/NAME/trial_XXX/`` (model,
VecNormalize, validation curve, TensorBoard; its settings in
``runs/NAME/configs/trial_XXX.toml``) that reports each validation to Tune, so ASHA
can stop the poor ones early. At the end: a table, ``runs/NAME/trials.png``,
``runs/NAME/sweep.json`` (``--json`` writes a copy) and the best trial copied to
``runs/NAME/best/`` for ``evaluate.py --policy runs/NAME/best`` and export.

Without ``--address`` Ray starts on this machine and stops with the sweep. With
``--address HOST:PORT`` (``ray start --head`` prints it) or ``auto`` the trials run on
that cluster (an address where no cluster answers within ``--connect-timeout``
seconds, 30 by default, is refused before anything starts); every node then needs this
project installed at the same path, and ``--runs-dir`` on storage every node shares.
A trial that crashes is reported ``failed`` with its error and the sweep goes on.
Interrupted (Ctrl-C), the same command resumes it: finished trials are kept,
unfinished ones continue from their last checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from agents.sweep_spec import SweepError, SweepSpec, load_sweep, to_toml
from distributed.ray_cluster import ADDRESS, ClusterError, check_address, connect
from settings.cli import (
    check_options,
    option,
    output_dir,
    output_file,
    parse,
    plain_name,
    run_cli,
    summary_of,
    within,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Tune's classic reporter honours verbose=0 (the newer one prints its own tables); the
# sweep prints its own progress bar and table.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
INTERRUPTED = 130
TUNE_DIR = "tune"  # Ray Tune's experiment state, inside runs/NAME
SPEC_COPY = "sweep_spec.json"  # the validated sweep file a resume must match
ENDED = ("TERMINATED", "ERROR")  # Tune's statuses of a trial it is done with
# An HTTP/2 client's opening: the connection preface and an empty SETTINGS frame. A
# gRPC server (Ray's head, Ray Client's server) answers with its own SETTINGS frame.
HTTP2_SETTINGS = 0x04  # the frame type byte (the fourth of a frame's 9-byte header)
HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, HTTP2_SETTINGS, 0, 0, 0, 0, 0])
# Ten minutes: a cluster that takes longer than that to answer a connection is down.
MAX_CONNECT_TIMEOUT_S = 600.0
SLOW_CLUSTER = "a cluster that takes longer to answer is down"


def trial_name(trial_id: str) -> str:
    """``trial_003`` from Tune's ``<experiment>_00003`` (random search); a searcher's
    own trial ids (Optuna's) are kept: ``trial_<id>``. Stable across a resume."""
    match = re.search(r"_(\d+)$", trial_id)
    return f"trial_{int(match.group(1)):03d}" if match else f"trial_{trial_id}"


# -- one trial (runs in a Ray worker) -------------------------------------------------
def run_trial(config: dict, spec: SweepSpec, sweep_dir: str) -> None:
    """Tune's trainable: one ``train.py`` run with the sampled settings, each validation
    reported to Tune. A resumed sweep continues the trial from its last checkpoint."""
    from ray import tune

    from agents.hyperparams import load_hyperparams
    from agents.train_run import TrainArgs, train_one
    from agents.training import checkpoints

    sweep = Path(sweep_dir)
    name = trial_name(tune.get_context().get_trial_id())
    settings = sweep / "configs" / f"{name}.toml"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(to_toml(spec.trial_tables(config)))
    scenario, seed = spec.trial_run(config)
    total = load_hyperparams(settings).ppo.total_timesteps
    resume = (sweep / name).is_dir() and bool(checkpoints(sweep / name))
    args = TrainArgs(name=name, runs_dir=sweep, config=settings, scenario=scenario,
                     trace_source=spec.trace_source, seed=seed, resume=resume,
                     overwrite=not resume, no_progress=True)  # fmt: skip
    last = []

    def report(row: dict) -> None:
        # tune.report blocks until Tune lets the trial go on, and a stop (ASHA, or the
        # budget reached) ends it there; the last validation is therefore reported only
        # once the run has saved its final model.
        if row["timesteps"] >= total:
            last.append(row)
            return
        tune.report(tune_metrics(row))

    code = train_one(args, report=report)
    if code != 0:
        raise RuntimeError(f"train.py ended {name} with exit code {code}")
    if last:
        tune.report(tune_metrics(last[-1]))


def tune_metrics(row: dict) -> dict:
    """A validation row (``eval_curve.csv``'s columns) as the metrics Tune sees."""
    return {
        "validation_reward": row["mean_reward"],
        "validation_accuracy": row["accuracy"],
        "deadline_miss_rate": row["deadline_miss_rate"],
        "decisions": row["timesteps"],
    }


# -- the driver ---------------------------------------------------------------------
_BARS: dict = {}  # the driver's progress bars by key (Tune pickles its callbacks)


def _advance(key: int) -> None:
    if key in _BARS:
        bar, task = _BARS[key]
        bar.advance(task)


def _progress_hook(key: int):
    """A Tune callback advancing bar ``key`` as trials end; it pickles as its key."""
    from ray.tune import Callback

    class ProgressHook(Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            _advance(key)

        def on_trial_error(self, iteration, trials, trial, **info):
            _advance(key)

        def __reduce__(self):
            return _progress_hook, (key,)

    return ProgressHook()


class TrialProgress:
    """A progress bar of finished trials, fed by Tune's callbacks on the driver."""

    def __init__(self, total: int, enabled: bool) -> None:
        from rich.progress import Progress

        self.progress = Progress(disable=not enabled)
        key = len(_BARS)
        _BARS[key] = (self.progress, self.progress.add_task("trials", total=total))
        self.callback = _progress_hook(key)


def build_tuner(spec: SweepSpec, sweep_dir: Path, callbacks: list):
    """A new Tuner, or the one of an interrupted sweep restored from its state."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, spec=spec, sweep_dir=str(sweep_dir)),
        {"cpu": spec.cpus_per_trial},
    )
    state = sweep_dir / TUNE_DIR
    if state.is_dir() and tune.Tuner.can_restore(str(state)):
        return tune.Tuner.restore(str(state), trainable, resume_unfinished=True,
                                  resume_errored=False)  # fmt: skip
    if spec.search == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        search = OptunaSearch(seed=spec.search_seed)
    else:
        search = BasicVariantGenerator(random_state=spec.search_seed)
    if spec.scheduler == "asha":
        max_t, grace = spec.budget()
        scheduler = ASHAScheduler(time_attr="decisions", max_t=max_t, grace_period=grace,
                                  reduction_factor=2)  # fmt: skip
    else:
        scheduler = FIFOScheduler()
    return tune.Tuner(
        trainable,
        param_space=spec.param_space(),
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode="max",
            num_samples=spec.trials,
            search_alg=search,
            scheduler=scheduler,
            trial_dirname_creator=lambda trial: trial_name(trial.trial_id),
        ),  # fmt: skip
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=str(sweep_dir),
            verbose=0,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
        ),  # fmt: skip
    )


def trial_statuses(sweep_dir: Path) -> dict[str, str]:
    """Tune's status of each trial (``TERMINATED``, ``ERROR``, ``RUNNING``, ...) by
    name, from the experiment state it saved."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(sweep_dir / TUNE_DIR))
    return {Path(t.path).name: t.status for t in analysis.trials}


def trial_count(spec: SweepSpec) -> int:
    grid = 1
    for d in spec.space:
        if d.distribution == "grid":
            grid *= len(d.values)
    return spec.trials * grid


# -- joining the cluster --------------------------------------------------------------
def probe_cluster(address: str | None, timeout_s: float) -> None:
    """Refuse, within ``timeout_s``, an ``--address`` where no Ray cluster answers.

    Ray's head and Ray Client's server speak gRPC over HTTP/2, whose server sends a
    SETTINGS frame as soon as a client opens a connection. ``ray.init`` retries without
    end against a port that accepts connections and stays silent (or speaks another
    protocol), so such a port is refused here, before Ray starts, naming the address and
    the wait. ``None`` (Ray on this machine) and ``auto`` have nothing to probe."""
    if address is None or address == "auto":
        return
    match = ADDRESS.match(address)
    host, port = match.group("host").strip("[]"), int(match.group("port"))
    where = f"--address {address}"
    end = time.monotonic() + timeout_s
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(HTTP2_HELLO)
            head = _receive(sock, 9, end)
    except TimeoutError:
        raise ClusterError(
            f"{where}: no Ray cluster answered within {timeout_s:g} s (--connect-timeout); "
            "check the address `ray start --head` printed, or leave --address out to run "
            "on this machine"
        ) from None
    except OSError as exc:
        raise ClusterError(
            f"{where}: no Ray cluster answers there ({exc.strerror or exc}); start one with "
            "`ray start --head`, or leave --address out to run on this machine"
        ) from None
    if len(head) < 9 or head[3] != HTTP2_SETTINGS:
        raise ClusterError(
            f"{where}: something answers there, but not a Ray cluster (it does not speak "
            f"gRPC; it sent {head[:16]!r}); give the address `ray start --head` printed"
        )


def _receive(sock: socket.socket, n: int, end: float) -> bytes:
    """Up to ``n`` bytes from ``sock`` (fewer if it closes); ``TimeoutError`` past
    ``end`` (a ``time.monotonic`` time)."""
    data = b""
    while len(data) < n:
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


# -- the command ----------------------------------------------------------------------
@dataclass
class SweepArgs:
    """``python -m agents.sweep``'s command line, checked before Ray starts."""

    sweep: Path = option(None, "the sweep file (TOML)", type=Path, positional=True,
                         metavar="SWEEP.toml")  # fmt: skip
    name: str = option(None, "sweep name: trials land in RUNS_DIR/NAME", check=plain_name,
                       required=True)  # fmt: skip
    runs_dir: Path = option(
        PROJECT_ROOT / "runs",
        "folder of the runs (shared by every node on a cluster)",
        type=Path,
        check=output_dir,
    )
    address: str | None = option(None, "Ray cluster: HOST:PORT, ray://HOST:PORT or auto "
                                 "(default: start Ray here)", type=str,
                                 check=check_address)  # fmt: skip
    connect_timeout: float = option(
        30.0,
        "seconds to wait for the cluster at --address to answer",
        check=within(0.0, MAX_CONNECT_TIMEOUT_S, SLOW_CLUSTER, above_low=True),
    )
    json: Path | None = option(None, "also write the summary JSON here", type=Path,
                               check=output_file)  # fmt: skip
    overwrite: bool = option(False, "replace runs/NAME (a finished or another sweep)")
    no_progress: bool = option(False, "no progress bar")

    def __post_init__(self) -> None:
        check_options(self)

    @property
    def sweep_dir(self) -> Path:
        return self.runs_dir / self.name


def check_sweep_dir(args: SweepArgs, spec: SweepSpec) -> bool:
    """Whether this call resumes an interrupted sweep; refuses to mix two sweeps in one
    folder or to redo a finished one without ``--overwrite``."""
    folder = args.sweep_dir
    if not folder.exists():
        return False
    if not folder.is_dir():
        raise SweepError(f"{folder}: exists and is not a folder")
    if not any(folder.iterdir()):
        return False  # an empty folder: nothing to keep
    if not (folder / SPEC_COPY).is_file():  # --overwrite deletes sweeps, nothing else
        what = "a training run" if (folder / "config.json").is_file() else "not a sweep"
        raise SweepError(
            f"{folder} is {what}, which a sweep never replaces (not even with --overwrite); "
            "pick another --name"
        )
    if args.overwrite:
        return False
    if (folder / "sweep.json").is_file():
        raise SweepError(f"{folder}: this sweep is finished (see {folder / 'sweep.json'}); "
                         "pass --overwrite to run it again")  # fmt: skip
    copy = folder / SPEC_COPY
    if not (copy.is_file() and (folder / TUNE_DIR).is_dir()):
        raise SweepError(f"{folder} exists and is not an interrupted sweep; pick another "
                         "--name or pass --overwrite to replace it")  # fmt: skip
    before = json.loads(copy.read_text())
    if before != json.loads(json.dumps(spec.to_json())):
        raise SweepError(f"{folder}: an interrupted sweep of another sweep file (or one "
                         f"since changed: {before.get('path')}); pass --overwrite to start "
                         "it anew")  # fmt: skip
    return True


def run_sweep(args: SweepArgs) -> int:
    from agents import sweep_report as report

    spec = load_sweep(args.sweep)
    resuming = check_sweep_dir(args, spec)
    # Before anything is deleted: an unreachable cluster loses nothing.
    probe_cluster(args.address, args.connect_timeout)
    connect(args.address, timeout_s=args.connect_timeout)
    import ray

    folder = args.sweep_dir
    try:
        cpus = ray.cluster_resources().get("CPU", 0)
        if spec.cpus_per_trial > cpus:  # Tune would wait for such a node forever
            raise SweepError(f"{args.sweep}: [sweep].cpus_per_trial is {spec.cpus_per_trial:g}, "
                             f"the Ray cluster has {cpus:g} CPUs")  # fmt: skip
        if args.overwrite and folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / SPEC_COPY).write_text(json.dumps(spec.to_json(), indent=2))
        total = trial_count(spec)
        print(f"{'resuming' if resuming else 'running'} sweep {folder}: {total} trials, "
              f"{spec.search} search, {spec.scheduler} scheduler, "
              f"{cpus:g} CPUs", flush=True)  # fmt: skip
        progress = TrialProgress(total, not args.no_progress)
        if resuming:  # the trials that ended before the interruption
            ended = [s for s in trial_statuses(folder).values() if s in ENDED]
            progress.progress.advance(progress.progress.task_ids[0], len(ended))
        t0 = time.perf_counter()
        with progress.progress:
            results = build_tuner(spec, folder, [progress.callback]).fit()
        seconds = time.perf_counter() - t0
    finally:
        ray.shutdown()
    trials = []
    statuses = trial_statuses(folder)
    for result in results:
        run = folder / Path(result.path).name
        config = spec.decode(result.config or {})
        ended = statuses.get(run.name) in ENDED
        trials.append(report.summarise_trial(run, config, spec.metric, result.error, ended))
    interrupted = any(t.status == "unfinished" for t in trials) or len(trials) < total
    best = report.best_trial(trials)
    if best is not None:
        report.copy_best(folder, best)
    summary = report.sweep_json(spec, trials, best, seconds, interrupted)
    report.print_table(trials, spec.metric, best)
    report.plot_trials(folder, trials, spec.metric, folder / "trials.png")
    if interrupted:
        again = f"python -m agents.sweep {args.sweep} --name {args.name}"
        if args.runs_dir != PROJECT_ROOT / "runs":
            again += f" --runs-dir {args.runs_dir}"
        if args.address is not None:
            again += f" --address {args.address}"
        print(f"interrupted after {seconds:.0f} s; the same command resumes it:\n  {again}",
              file=sys.stderr)  # fmt: skip
        return INTERRUPTED
    text = json.dumps(summary, indent=2)
    (folder / "sweep.json").write_text(text)
    if args.json is not None:
        args.json.write_text(text)
    failed = sum(t.status == "failed" for t in trials)
    where = (f"{best.name} ({spec.metric} {best.score:.4f}), copied to {folder / 'best'}"
             if best else "none (no trial reported a validation)")  # fmt: skip
    print(f"{len(trials)} trials in {seconds:.0f} s ({failed} failed); best: {where}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: run_sweep(parse(SweepArgs, argv, summary_of(__doc__))))


if __name__ == "__main__":
    # Run the importable module's main, not __main__'s copy: Ray pickles the trainable
    # and the callbacks by reference to ``agents.sweep``, which every worker imports.
    from agents.sweep import main as importable_main

    sys.exit(importable_main())
