"""A PPO training run, from its arguments to ``runs/NAME`` (``train.py`` is its command
line; ``agents.sweep`` runs it as a Ray Tune trial).

    python train.py [--name NAME] [--timesteps N] [--seed S] [--config FILE]
                    [--scenario FILE] [--trace-source auto|shared|builtin|synthetic]
                    [--resume] [--overwrite] [--seeds 0,1,2]

Hyperparameters live in ``agents/hyperparams.toml``; ``--config`` overrides any of
them, flags override both. Everything of a run lands in ``runs/NAME/``: the final
model and the best one on the validation traces (``model.zip``, ``best_model.zip``),
their observation normalisation as JSON (and VecNormalize's full state for resuming),
the resolved config, TensorBoard logs (``tb/``), checkpoints, and the validation curve
(``eval_curve.csv`` and ``eval_curve.png``). ``--resume`` continues from the newest
readable checkpoint with the same step count, so TensorBoard curves continue where
they stopped. Ctrl-C saves a checkpoint and says how to resume.

Step counts (``--timesteps``, ``total_timesteps``, the ``[eval]`` frequencies, the
curve's ``timesteps``) are PPO steps: decisions, each held for ``action_repeat``
requests in training (8 in the shipped config).

The stages, in order: ``plan`` reads and validates every input (flags, config,
scenario, traces, the run to resume) and touches no file; ``build_model`` makes a
fresh PPO or loads the newest readable checkpoint (still writing nothing);
``prepare_run_dir`` creates (or, with ``--overwrite``, replaces) ``runs/NAME``;
``learn`` trains with validation and checkpoints; ``finish`` saves the model, its
normalisation, the config and the curve's plot.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from agents.hyperparams import EvalSettings, Hyperparams, PPOSettings, load_hyperparams
from settings.cli import (
    UsageError,
    check_options,
    like_field,
    option,
    output_dir,
    plain_name,
)
from settings.cli import seed as seed_range
from traces.sets import SOURCES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INTERRUPTED = 130  # the shell's code for a process ended by Ctrl-C (128 + SIGINT)


def seed_list(text: str) -> list[int]:
    """Distinct seeds separated by commas (``0,1,2``); an empty item or a seed named
    twice is refused before any training (each seed is a run of its own)."""
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise ValueError(f"names no seed: {text!r}")
    if "" in items:
        raise ValueError(f"has an empty item between commas: {text!r}")
    try:
        seeds = [int(item) for item in items]
    except ValueError:
        raise ValueError(f"must be integers separated by commas, got {text!r}") from None
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"names seed {repeated[0]} twice: {text!r}")
    return [seed_range(s) for s in seeds]


@dataclass
class TrainArgs:
    """train.py's command line; every value is checked before anything is written."""

    name: str = option("default", "run name: the run lands in RUNS_DIR/NAME", check=plain_name)
    runs_dir: Path = option(
        PROJECT_ROOT / "runs", "folder of the runs", type=Path, check=output_dir
    )
    config: Path | None = option(None, "TOML laid over agents/hyperparams.toml", type=Path)
    scenario: Path | None = option(None, "scenario TOML (default: built-in)", type=Path)
    trace_source: str = option("auto", "where traces come from", choices=SOURCES)
    timesteps: int | None = option(
        None,
        "PPO steps; each is a decision held for action_repeat requests",
        type=int,
        check=like_field(PPOSettings, "total_timesteps", "[ppo]"),
    )
    n_envs: int | None = option(
        None,
        "parallel training environments",
        type=int,
        check=like_field(PPOSettings, "n_envs", "[ppo]"),
    )
    seed: int = option(0, "seed of PPO and the training environments", check=seed_range)
    seeds: str | None = option(
        None, "comma-separated seeds: train runs/NAME-seedS for each, then copy the one "
        "with the best validation reward to runs/NAME", type=str,
    )  # fmt: skip
    eval_freq: int | None = option(
        None,
        "PPO steps between validations",
        type=int,
        check=like_field(EvalSettings, "freq", "[eval]"),
    )
    resume: bool = option(False, "continue runs/NAME from its newest readable checkpoint")
    overwrite: bool = option(False, "replace runs/NAME (once every input is validated)")
    no_progress: bool = option(False, "no progress bar")
    seed_values: list[int] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        check_options(self)
        if self.resume and self.overwrite:
            raise UsageError(
                "--resume and --overwrite contradict each other: --resume continues "
                f"{self.run}, --overwrite deletes it first; give one"
            )
        if self.seeds is not None:
            try:
                self.seed_values = seed_list(self.seeds)
            except ValueError as exc:
                raise UsageError(f"--seeds: {exc}") from None

    @property
    def run(self) -> Path:
        return self.runs_dir / self.name


@dataclass
class TrainPlan:
    """Everything a run needs, read and validated; nothing written yet."""

    args: TrainArgs
    hp: Hyperparams
    scenario: object
    train_traces: list
    val_traces: list
    resume_from: int | None  # the steps of the run to resume (None: a fresh run)
    previous_config: dict = field(default_factory=dict)

    @property
    def run(self) -> Path:
        return self.args.run


# -- stage 1: validate every input, write nothing ------------------------------------
def plan(args: TrainArgs) -> TrainPlan | None:
    """Read and check the config, the scenario, the traces and the run directory;
    ``None`` when a resumed run has already reached its step count. Raises the
    project's input errors (``run_cli`` turns them into one line)."""
    from agents.ppo import RunError, read_run_config
    from agents.run_files import verify
    from agents.train_resume import resume_settings
    from agents.training import checkpoints
    from sim import load_scenario
    from traces.sets import load_families

    updates = {"ppo": {}, "eval": {}}
    if args.timesteps is not None:
        updates["ppo"]["total_timesteps"] = args.timesteps
    if args.n_envs is not None:
        updates["ppo"]["n_envs"] = args.n_envs
    if args.eval_freq is not None:
        updates["eval"]["freq"] = args.eval_freq
    run = args.run
    if run.exists() and not run.is_dir():
        raise RunError(f"{run}: exists and is not a run directory")
    if run.is_symlink():
        raise RunError(
            f"{run}: a symbolic link to {run.resolve()}; a run is written in a folder of "
            "its own, never through a link (remove the link or give another --name)"
        )
    previous, done = {}, None
    if args.resume:
        if not run.is_dir():
            raise RunError(f"{run}: no such run to resume (train it first without --resume)")
        verify(run, run / "config.json")
        previous = read_run_config(run)
        own = resume_settings(args, run, previous, updates)
        hp = own.hp
        args = replace(args, scenario=own.scenario, trace_source=own.trace_source, seed=own.seed)
        found = checkpoints(run)
        if not found:
            raise RunError(f"{run}: no checkpoint to resume from")
        done = found[0].steps
        if done >= hp.ppo.total_timesteps:
            print(
                f"{run} is already done: it has {done} steps and {hp.ppo.total_timesteps} were "
                "asked for; nothing changed (pass a larger --timesteps to train on)"
            )
            return None
    else:
        hp = load_hyperparams(args.config, updates)  # a bad config is named first
        if run.exists() and not args.overwrite:
            raise RunError(
                f"{run} exists; pass --resume to continue it or --overwrite to replace it"
            )
    scenario = load_scenario(args.scenario)
    scenario.check_references()  # model, data and profile together
    train_traces, train_errors = load_families(args.trace_source, split="train")
    val_traces, _ = load_families(args.trace_source, split="val")
    for err in train_errors:
        print(f"skipped bad trace: {err}", file=sys.stderr)
    return TrainPlan(args, hp, scenario, _flat(train_traces), _flat(val_traces), done, previous)


def _flat(by_family: dict) -> list:
    return [t for family in sorted(by_family) for t in by_family[family]]


# -- stage 2: the run directory ------------------------------------------------------
def prepare_run_dir(p: TrainPlan, done_steps: int) -> None:
    """Create ``runs/NAME`` (after deleting the old one with ``--overwrite``); a run
    resumed at ``done_steps`` keeps its curve up to there (what came after is trained
    again: a killed run's last validations can be newer than its last checkpoint)."""
    from agents.training import CURVE_HEADER, truncate_curve

    if p.resume_from is None and p.run.exists():
        shutil.rmtree(p.run)
    (p.run / "checkpoints").mkdir(parents=True, exist_ok=True)
    curve = p.run / "eval_curve.csv"
    if p.resume_from is None or not curve.exists():
        curve.write_text(CURVE_HEADER)
    elif truncate_curve(curve, done_steps):
        print(f"{curve}: validations after step {done_steps} dropped (trained again)")


# -- stage 3: the model --------------------------------------------------------------
def build_model(p: TrainPlan):
    """A fresh PPO behind VecNormalize, or the newest readable checkpoint: ``(model,
    venv, steps already done)``."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    from agents.training import (
        batched_venv,
        fleet_venv,
        load_checkpoint,
        make_env_fn,
        normalized,
        ppo_kwargs,
    )

    hp, tb = p.hp, str(p.run / "tb")
    kwargs = ppo_kwargs(hp.ppo)
    if p.scenario.fleet.devices > 1:
        venv = fleet_venv(p.scenario, p.train_traces, hp.ppo)
        # The fleet's devices replace the n_envs copies: a rollout keeps about as many
        # decisions as n_envs x n_steps.
        kwargs["n_steps"] = max(2, round(hp.ppo.n_envs * hp.ppo.n_steps / venv.num_envs))
    elif hp.ppo.reward_shaping == "none":  # independent devices, stepped as one batch
        venv = batched_venv(p.scenario, p.train_traces, hp.ppo)
    else:  # shaping wraps each device's environment
        make = make_env_fn(p.scenario, p.train_traces, "val", hp.ppo)
        venv = DummyVecEnv([make for _ in range(hp.ppo.n_envs)])
    venv.seed(p.args.seed)
    if p.resume_from is not None:
        model, venv, ckpt = load_checkpoint(p.run, venv, tb)
        print(f"resuming {p.run} from {ckpt.model.name} at {ckpt.steps} steps")
        return model, venv, ckpt.steps
    venv = normalized(venv, hp.normalize, hp.ppo.gamma)
    model = PPO("MlpPolicy", venv, **kwargs, tensorboard_log=tb,
                seed=p.args.seed, device="cpu", verbose=0)  # fmt: skip
    return model, venv, 0


def warm_start(model, venv, p: TrainPlan) -> None:
    """Imitation of an expert on the training traces (see ``agents.imitation``): the
    observation statistics start from the demonstrations, the actor from their actions."""
    from agents.best_fixed import find_best_fixed_by_context
    from agents.imitation import FrozenRunningMeanStd, collect_demonstrations, pretrain_actor
    from agents.oracle import Oracle
    from envs import OffloadEnv

    cfg, seed = p.hp.imitation, p.args.seed
    env = OffloadEnv(p.scenario, p.train_traces, sample_split="val",
                     episode_requests=p.hp.ppo.episode_requests)  # fmt: skip
    if cfg.expert == "oracle":
        expert = Oracle()
    else:
        expert = find_best_fixed_by_context(
            env, list(env.traces), episodes=cfg.expert_episodes, seed=seed + 12345
        )
        print(f"imitation expert: {len(expert.table)} (radio, battery band) actions")
    obs, actions = collect_demonstrations(env, expert, cfg.steps, seed=seed)
    stats = FrozenRunningMeanStd.of(obs)
    if cfg.freeze_obs_normalization:
        venv.obs_rms = stats
    else:  # the same statistics, which PPO's rollouts then keep updating
        rms = venv.obs_rms
        rms.mean, rms.var, rms.count = stats.mean, stats.var, stats.count
    accuracy = pretrain_actor(
        model, venv.normalize_obs(obs), actions, cfg.epochs,
        learning_rate=cfg.learning_rate, seed=seed,
    )  # fmt: skip
    print(f"imitation: {len(obs)} {cfg.expert} decisions, actor matches {accuracy:.1%}")


def resolved_config(p: TrainPlan, nvec, levels_by_cut, obs_dim: int, model_hash: str) -> dict:
    from agents.ppo import portable_path
    from agents.run_files import sha256

    source = p.scenario.source
    return {
        "config": p.hp.to_dict(),
        "scenario": portable_path(source) if Path(source).is_file() else None,
        "scenario_sha256": sha256(Path(source)) if Path(source).is_file() else None,
        "seed": p.args.seed,
        "trace_source": p.args.trace_source,
        "nvec": list(nvec),
        "levels_by_cut": list(levels_by_cut),
        "variants": list(p.scenario.variants),  # what the action's variant index means
        "actions": "envs.wrappers.distinct_actions(*nvec): the agent's Discrete index -> action",
        "obs_dim": obs_dim,
        "profile_model_hash": model_hash,
    }


# -- stage 4: learning, with Ctrl-C saving a checkpoint -------------------------------
def learn(p: TrainPlan, model, venv, validation, done_steps: int) -> float | None:
    """Train to ``total_timesteps``; returns the seconds it took."""
    remaining = p.hp.ppo.total_timesteps - done_steps
    print(f"training {p.run}: {remaining} PPO steps from {done_steps}", flush=True)
    t0 = time.perf_counter()
    model.learn(
        total_timesteps=remaining,
        callback=validation,
        progress_bar=not p.args.no_progress,
        reset_num_timesteps=done_steps == 0,
        tb_log_name="PPO",
    )
    return time.perf_counter() - t0


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextmanager
def _handling(handler):
    """Every stop signal handled by ``handler`` inside the block. Only the main thread
    can set handlers (a Ray Tune trial runs in another: it is left as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        if handler is _interrupt and previous[sig] == signal.SIG_IGN:
            continue  # a SIGINT the parent ignores (nohup, a background job) stays ignored
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def sigterm_as_ctrl_c():
    """SIGTERM (what ``kill``, ``timeout``, CI runners and job schedulers send) stops
    training as Ctrl-C does: with a checkpoint and the command that resumes."""
    return _handling(_interrupt)


def ctrl_c_waits():
    """Hold Ctrl-C and SIGTERM until the block's files are written (a second one would
    leave a half-written checkpoint or model)."""
    return _handling(signal.SIG_IGN)


def save_interrupted(p: TrainPlan, model, venv) -> int:
    """Ctrl-C once the run folder exists: save a checkpoint and say how to resume."""
    from agents.training import save_checkpoint

    with ctrl_c_waits():
        ckpt = save_checkpoint(p.run, model, venv)
    again = " ".join(resume_command(p.args))
    print(
        f"\ninterrupted at {ckpt.steps} steps; checkpoint saved to {ckpt.model}\n"
        f"continue with: {again}",
        file=sys.stderr,
    )
    return INTERRUPTED


def resume_command(args: TrainArgs) -> list[str]:
    cmd = ["python", "train.py", "--name", args.name, "--resume"]
    if args.runs_dir != PROJECT_ROOT / "runs":
        cmd += ["--runs-dir", str(args.runs_dir)]
    for flag, value in (("--config", args.config), ("--scenario", args.scenario),
                        ("--timesteps", args.timesteps), ("--n-envs", args.n_envs),
                        ("--eval-freq", args.eval_freq)):  # fmt: skip
        if value is not None:
            cmd += [flag, str(value)]
    if args.trace_source != "auto":
        cmd += ["--trace-source", args.trace_source]
    return cmd


# -- stage 5: what a finished call leaves ---------------------------------------------
def finish(p: TrainPlan, model, venv, validation, resolved: dict, seconds: float) -> None:
    from agents.ppo import ObsNormalizer
    from agents.run_files import seal
    from agents.training import plot_curve

    run = p.run
    validation.evaluate()  # the final model gets its point (once) on the curve too
    model.save(run / "model.zip")
    venv.save(str(run / "vecnormalize.pkl"))
    (run / "vecnormalize.json").write_text(
        json.dumps(ObsNormalizer.from_vecnormalize(venv).to_json())
    )
    if not (run / "best_model.zip").exists():
        shutil.copy(run / "model.zip", run / "best_model.zip")
        shutil.copy(run / "vecnormalize.json", run / "best_vecnormalize.json")
    before = p.previous_config.get("train_seconds", p.previous_config.get(
        "train_seconds_this_call", 0.0))  # fmt: skip
    resolved["train_seconds_this_call"] = round(seconds, 1)
    resolved["train_seconds"] = round(float(before) + seconds, 1)
    resolved["total_timesteps"] = int(model.num_timesteps)
    (run / "config.json").write_text(json.dumps(resolved, indent=2))
    plot_curve(run / "eval_curve.csv", run / "eval_curve.png", p.hp.ppo.action_repeat)
    seal(run)
    print(
        f"trained {model.num_timesteps} steps in {seconds:.0f} s; best validation reward "
        f"{validation.best:.4f}; run in {run}"
    )


def train_one(args: TrainArgs, report=None) -> int:
    """One run, stage by stage; ``report(row)`` receives each validation's row (a
    sweep's trial reports them to Ray Tune)."""
    p = plan(args)  # before torch is imported: a bad input fails in a second
    if p is None:
        return 0
    with sigterm_as_ctrl_c():
        return _train(p, report)


def _train(p: TrainPlan, report) -> int:
    """``train_one`` once its inputs are planned: build, learn, finish."""
    import torch

    from agents.ppo import RunError
    from agents.rollout import run_many
    from agents.run_files import seal
    from agents.training import fleet_validation, validation_callback, validation_episodes
    from envs.wrappers import env_actions

    torch.set_num_threads(1)
    hp = p.hp
    # The validation episodes: val traces, the same at every evaluation (CRN).
    val_env, specs = validation_episodes(
        p.scenario, p.val_traces, hp.ppo.episode_requests, hp.eval.episodes_per_family
    )
    devices = p.scenario.fleet.devices
    if devices > 1:  # a fleet trains and validates on its shared cloud
        validate = fleet_validation(p.scenario, p.val_traces, hp.ppo.episode_requests, devices)
    else:

        def validate(policy):
            return run_many(val_env, policy, specs)

    try:
        model, venv, done_steps = build_model(p)  # reads only: a failure here loses nothing
    except KeyboardInterrupt:
        print(f"interrupted before {p.run} was written; nothing changed", file=sys.stderr)
        return INTERRUPTED
    try:  # from here on, Ctrl-C at any moment saves a checkpoint
        try:
            prepare_run_dir(p, done_steps)
        except OSError as exc:
            raise RunError(f"{p.run}: cannot be written ({exc.strerror or exc})") from None
        nvec = val_env.action_space.nvec.tolist()
        resolved = resolved_config(
            p, nvec, val_env.system.levels_by_cut, int(venv.observation_space.shape[0]),
            val_env.system.profile.model_hash,
        )  # fmt: skip
        (p.run / "config.json").write_text(json.dumps({**p.previous_config, **resolved}, indent=2))
        seal(p.run)
        validation = validation_callback(
            p.run, venv, validate, env_actions(val_env), hp.eval.freq,
            hp.eval.checkpoint_freq, done_steps, report,
        )  # fmt: skip
        if done_steps == 0 and hp.imitation.steps > 0:
            warm_start(model, venv, p)
            validation.init_callback(model)
            validation.evaluate(log=False)  # the imitation policy may be the best model
        seconds = learn(p, model, venv, validation, done_steps)
    except KeyboardInterrupt:
        return save_interrupted(p, model, venv)
    with ctrl_c_waits():  # the final model and its record are written whole
        finish(p, model, venv, validation, resolved, seconds)
    return 0


def train_seeds(args: TrainArgs) -> int:
    """One run per seed, then the best on the validation traces becomes runs/NAME:
    seeds of the same config differ (docs/benchmarks-history.md), and validation tells
    them apart."""
    from agents.ppo import RunError
    from agents.run_files import copy_run
    from agents.training import best_validation, checkpoints

    target = args.run
    if target.exists() and not args.overwrite:
        raise RunError(f"{target} exists; pass --overwrite to replace it")
    for seed in args.seed_values:  # every seed's folder is checked before the first trains
        one = args.runs_dir / f"{args.name}-seed{seed}"
        if one.exists() and not (args.overwrite or args.resume):
            raise RunError(
                f"{one} exists (seed {seed} of --seeds {args.seeds}); pass --resume to "
                "continue the seeds or --overwrite to replace them"
            )
    scores = {}
    for seed in args.seed_values:
        name = f"{args.name}-seed{seed}"
        # --resume continues the seeds that had started; the others start fresh.
        resume = args.resume and (args.runs_dir / name).is_dir() and bool(
            checkpoints(args.runs_dir / name))  # fmt: skip
        one = TrainArgs(**{**_init_fields(args), "name": name, "seed": seed, "seeds": None,
                           "resume": resume})  # fmt: skip
        rc = train_one(one)
        if rc:
            return rc
        scores[seed] = best_validation(args.runs_dir / name / "eval_curve.csv")
    best = max(scores, key=scores.get)
    note = {"best_validation_by_seed": scores, "selected_seed": best}
    copy_run(args.runs_dir / f"{args.name}-seed{best}", target, "seed_selection", note)
    listed = ", ".join(f"seed {s}: {v:.4f}" for s, v in scores.items())
    print(f"best validation reward by seed ({listed}); seed {best} copied to {target}")
    return 0


def _init_fields(args: TrainArgs) -> dict:
    return {k: v for k, v in vars(args).items() if k != "seed_values"}
