"""What a PPO training run is made of, for ``train.py`` and the experiments: the
training environments, the PPO and VecNormalize arguments, the fixed validation
episodes, the validation callback with its curve, checkpoints (found, loaded with a
fallback past unreadable ones, saved on interrupt) and the curve's plot."""

from __future__ import annotations

import csv
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.hyperparams import NormalizeSettings, PPOSettings
from agents.ppo import RunError, read_run_config
from agents.run_files import update_record, verify

CURVE_HEADER = "timesteps,mean_reward,ci95,accuracy,deadline_miss_rate\n"


def make_env_fn(scenario, traces, sample_split: str, ppo: PPOSettings):
    """A function that builds one training env: ``OffloadEnv`` on ``traces``, held
    decisions, the configured shaping, the flat action space, SB3's ``Monitor``."""

    def make():
        from stable_baselines3.common.monitor import Monitor

        from envs import OffloadEnv
        from envs.shaping import RegimePotential, TailPotential
        from envs.wrappers import ActionRepeat, DistinctActions

        env = OffloadEnv(
            scenario,
            list(traces),
            sample_split=sample_split,
            episode_requests=ppo.episode_requests,
            accuracy_credit=ppo.accuracy_credit,
        )
        if ppo.action_repeat > 1:
            env = ActionRepeat(env, ppo.action_repeat)
        # Shaping wraps the held decisions: its potential then moves with the learner's
        # own steps and gamma, which is what keeps the optimal policy unchanged.
        if ppo.reward_shaping == "tail_potential":
            env = TailPotential(env, ppo.gamma)
        elif ppo.reward_shaping == "regime":
            env = RegimePotential(env, ppo.shaping_tail_share)
        return Monitor(DistinctActions(env))

    return make


def fleet_venv(scenario, traces, ppo: PPOSettings):
    """The scenario's fleet (``[fleet] devices``) as SB3's ``VecEnv``: one environment
    per device, held decisions, the flat action space, episode statistics."""
    from stable_baselines3.common.vec_env import VecMonitor

    from agents.fleet_vec import FleetVecEnv
    from envs.fleet_env import OffloadFleetEnv

    if ppo.reward_shaping != "none":
        raise ValueError("reward shaping is not available for fleets; set reward_shaping "
                         "= \"none\"")  # fmt: skip
    fleet = OffloadFleetEnv(
        scenario.fleet.devices, scenario, list(traces), sample_split="val",
        episode_requests=ppo.episode_requests, accuracy_credit=ppo.accuracy_credit,
    )  # fmt: skip
    return VecMonitor(FleetVecEnv(fleet, ppo.action_repeat))


def batched_venv(scenario, traces, ppo: PPOSettings):
    """``n_envs`` independent devices (each with the cloud to itself, as ``Offload-v0``)
    stepped as one batch, as SB3's ``VecEnv``: held decisions, the flat action space, a
    single device's 17 features, episode statistics. What ``make_env_fn``'s copies do,
    without a Python environment per device (no reward shaping: its potentials are
    per-environment wrappers)."""
    from stable_baselines3.common.vec_env import VecMonitor

    from agents.fleet_vec import FleetVecEnv
    from envs.fleet_env import OffloadFleetEnv
    from telemetry.observation import OBS_DIM

    devices = OffloadFleetEnv(
        ppo.n_envs, scenario, list(traces), sample_split="val",
        episode_requests=ppo.episode_requests, accuracy_credit=ppo.accuracy_credit,
        cloud="private",
    )  # fmt: skip
    return VecMonitor(FleetVecEnv(devices, ppo.action_repeat, obs_dim=OBS_DIM))


def ppo_kwargs(ppo: PPOSettings) -> dict:
    """The PPO constructor's arguments from the ``[ppo]`` table."""
    return {
        "n_steps": ppo.n_steps,
        "batch_size": ppo.batch_size,
        "n_epochs": ppo.n_epochs,
        "learning_rate": ppo.learning_rate,
        "gamma": ppo.gamma,
        "gae_lambda": ppo.gae_lambda,
        "clip_range": ppo.clip_range,
        "ent_coef": ppo.ent_coef,
        "vf_coef": ppo.vf_coef,
        "max_grad_norm": ppo.max_grad_norm,
        "policy_kwargs": {"net_arch": list(ppo.net_arch)},
    }


def normalized(venv, norm: NormalizeSettings, gamma: float):
    """``venv`` behind ``VecNormalize`` as the ``[normalize]`` table says."""
    from stable_baselines3.common.vec_env import VecNormalize

    return VecNormalize(
        venv,
        norm_obs=norm.norm_obs,
        norm_reward=norm.norm_reward,
        clip_obs=norm.clip_obs,
        gamma=gamma,
    )


def validation_episodes(scenario, traces, episode_requests: int, per_family: int):
    """The validation env (val traces, val images) and its fixed episodes, the same at
    every evaluation of a run and in every run (common random numbers)."""
    from agents.rollout import make_specs
    from envs import OffloadEnv
    from traces.sets import group_by_family

    val_env = OffloadEnv(
        scenario, list(traces), sample_split="val", episode_requests=episode_requests
    )
    by_family = group_by_family(list(val_env.traces))
    battery = (scenario.battery.initial_min, scenario.battery.initial_max)
    specs = [
        s for fam in sorted(by_family) for s in make_specs(by_family[fam], per_family, 777, battery)
    ]
    return val_env, specs


# -- checkpoints ----------------------------------------------------------------------
@dataclass(frozen=True)
class Checkpoint:
    """A model and the VecNormalize state saved with it, after ``steps`` PPO steps."""

    steps: int
    model: Path
    vecnormalize: Path


def checkpoints(run: Path) -> list[Checkpoint]:
    """Every checkpoint of a run, newest first: ``checkpoints/model_N_steps.zip`` with
    its ``vecnormalize_N_steps.pkl``, and the final model of a finished call
    (``model.zip`` + ``vecnormalize.pkl``, at the ``total_timesteps`` its config
    records) when it is newer than the last checkpoint."""
    found = []
    for path in (run / "checkpoints").glob("model_*_steps.zip"):
        match = re.fullmatch(r"model_(\d+)_steps\.zip", path.name)
        norm = run / "checkpoints" / f"vecnormalize_{match.group(1)}_steps.pkl" if match else None
        if norm is not None and norm.is_file():
            found.append(Checkpoint(int(match.group(1)), path, norm))
    final, norm = run / "model.zip", run / "vecnormalize.pkl"
    if final.is_file() and norm.is_file() and (run / "config.json").is_file():
        steps = read_run_config(run).get("total_timesteps")
        if isinstance(steps, int) and all(steps > c.steps for c in found):
            found.append(Checkpoint(steps, final, norm))
    return sorted(found, key=lambda c: -c.steps)


def load_checkpoint(run: Path, venv, tensorboard_log: str):
    """The newest readable checkpoint of ``run`` as ``(model, venv, checkpoint)``.
    An unreadable one (truncated, corrupt) is skipped with a warning naming it; when
    none can be read, ``RunError`` lists them all."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecNormalize

    bad = []
    for ckpt in checkpoints(run):
        try:
            verify(run, ckpt.model, ckpt.vecnormalize)  # before either is unpickled
            normalized_venv = VecNormalize.load(str(ckpt.vecnormalize), venv)
            model = PPO.load(
                ckpt.model, env=normalized_venv, device="cpu", tensorboard_log=tensorboard_log
            )
        except Exception as exc:  # zipfile, pickle, torch and SB3 raise many kinds
            bad.append(f"{ckpt.model.name} / {ckpt.vecnormalize.name}: {exc}")
            warnings.warn(
                f"{ckpt.model} (or {ckpt.vecnormalize.name}) is unreadable ({exc}); "
                "trying the previous checkpoint",
                RuntimeWarning,
                stacklevel=2,
            )
            continue
        normalized_venv.training = True
        return model, normalized_venv, ckpt
    if bad:
        raise RunError(f"{run}: no readable checkpoint to resume from:\n  " + "\n  ".join(bad))
    raise RunError(f"{run}: no checkpoint to resume from")


def save_checkpoint(run: Path, model, venv) -> Checkpoint:
    steps = model.num_timesteps
    ckpt = Checkpoint(
        steps,
        run / "checkpoints" / f"model_{steps}_steps.zip",
        run / "checkpoints" / f"vecnormalize_{steps}_steps.pkl",
    )
    ckpt.model.parent.mkdir(parents=True, exist_ok=True)
    model.save(ckpt.model)
    venv.save(str(ckpt.vecnormalize))
    update_record(run, ckpt.model, ckpt.vecnormalize)
    return ckpt


# -- validation -----------------------------------------------------------------------
def best_validation(curve_csv: Path) -> float:
    """The best mean reward a run's validation curve recorded (-inf before the first)."""
    if not curve_csv.is_file():
        return -np.inf
    rows = csv.DictReader(curve_csv.open())
    return max((float(r["mean_reward"]) for r in rows), default=-np.inf)


def fleet_validation(scenario, traces, episode_requests: int, devices: int):
    """The fleet's counterpart of ``validation_episodes``: one episode of ``devices``
    devices on the val traces, the same seed at every evaluation. Returns a function
    of a ``PPOPolicy`` (observing the fleet's 18 features) giving its requests."""
    from agents.fleet_rollout import for_fleet, run_fleet
    from envs.fleet_env import FLEET_OBS_DIM, OffloadFleetEnv

    fleet = OffloadFleetEnv(devices, scenario, list(traces), sample_split="val",
                            episode_requests=episode_requests)  # fmt: skip

    def validate(policy) -> dict:
        return run_fleet(fleet, for_fleet(policy, devices, FLEET_OBS_DIM), seed=777)

    return validate


def validation_callback(run: Path, venv, validate, table, freq: int, ckpt_freq: int,
                        done_steps: int, report=None):  # fmt: skip
    """An SB3 callback that validates every ``freq`` steps on fixed episodes
    (``validate(policy)`` returns their requests; one row per step count in
    ``eval_curve.csv``), keeps the best model, and writes a checkpoint every
    ``ckpt_freq`` steps. ``report(row)``, when given, receives each validation's row
    (the curve's columns by name; a sweep hands it to Ray Tune)."""
    from stable_baselines3.common.callbacks import BaseCallback

    from agents.ppo import ObsNormalizer, PPOPolicy
    from sim.metrics import episode_means, mean_ci95

    curve_csv = run / "eval_curve.csv"

    class Validation(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next_eval = done_steps + freq
            self.next_ckpt = done_steps + ckpt_freq
            self.best = best_validation(curve_csv)
            self.last_evaluated: int | None = None

        def evaluate(self, log: bool = True) -> None:
            """Validate the current model, unless this step count already was."""
            if self.last_evaluated == self.num_timesteps:
                return
            self.last_evaluated = self.num_timesteps
            norm = ObsNormalizer.from_vecnormalize(venv)
            res = validate(PPOPolicy(self.model, norm, table))
            mean, ci = mean_ci95(episode_means(res))
            if log:  # TensorBoard exists once learning has started
                self.logger.record("eval/mean_reward", mean)
                self.logger.record("eval/accuracy", float(res["correct"].mean()))
                self.logger.record("eval/deadline_miss_rate", float(res["deadline_miss"].mean()))
            row = {"timesteps": int(self.num_timesteps), "mean_reward": float(mean),
                   "ci95": float(ci), "accuracy": float(res["correct"].mean()),
                   "deadline_miss_rate": float(res["deadline_miss"].mean())}  # fmt: skip
            with curve_csv.open("a") as fh:
                fh.write(",".join(f"{v:.6f}" if isinstance(v, float) else str(v)
                                  for v in row.values()) + "\n")  # fmt: skip
            written = [curve_csv]
            if mean > self.best:
                self.best = mean
                self.model.save(run / "best_model.zip")
                (run / "best_vecnormalize.json").write_text(json.dumps(norm.to_json()))
                written += [run / "best_model.zip", run / "best_vecnormalize.json"]
            update_record(run, *written)
            if report is not None:  # after the best model is saved: a stop may follow
                report(row)

        def _on_step(self) -> bool:
            # The checkpoint first: a validation's report may be the last thing a
            # stopped trial does (a sweep's tune.report blocks until Tune says go on).
            if self.num_timesteps >= self.next_ckpt:
                while self.next_ckpt <= self.num_timesteps:
                    self.next_ckpt += ckpt_freq
                save_checkpoint(run, self.model, venv)
            if self.num_timesteps >= self.next_eval:
                while self.next_eval <= self.num_timesteps:
                    self.next_eval += freq
                self.evaluate()
            return True

    return Validation()


def truncate_curve(curve_csv: Path, steps: int) -> int:
    """Drop the validation rows after ``steps`` (a run resumed from an older checkpoint
    than its last validation: that future is trained again); returns how many."""
    if not curve_csv.is_file():
        return 0
    rows = list(csv.DictReader(curve_csv.open()))
    kept = [r for r in rows if int(r["timesteps"]) <= steps]
    if len(kept) < len(rows):
        with curve_csv.open("w") as fh:
            fh.write(CURVE_HEADER)
            fh.writelines(",".join(r[k] for k in CURVE_HEADER.strip().split(",")) + "\n"
                          for r in kept)  # fmt: skip
    return len(rows) - len(kept)


def plot_curve(csv_path: Path, png_path: Path, requests_per_step: int = 1) -> None:
    """The validation curve against training requests (PPO steps x action repeat)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(csv_path.open()))
    if not rows:
        return
    steps = [int(r["timesteps"]) * requests_per_step for r in rows]
    mean = np.array([float(r["mean_reward"]) for r in rows])
    ci = np.array([float(r["ci95"]) for r in rows])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, mean, marker="o", label="PPO (deterministic)")
    ax.fill_between(steps, mean - ci, mean + ci, alpha=0.25)
    ax.set_xlabel("training requests" if requests_per_step == 1 else
                  f"training requests (decisions held for {requests_per_step})")  # fmt: skip
    ax.set_ylabel("mean reward per request")
    ax.set_title("validation traces")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
