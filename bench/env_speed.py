"""Environment speed: Offload-v0 against CartPole-v1 in the same run, and PPO throughput.

    python -m bench.env_speed [--steps 20000] [--repeats 5] [--ppo-steps 20480]

Both environments are made with ``gymnasium.make`` (same wrappers) and stepped by the
same single-process loop with ``action_space.sample()``. The ratio of their step rates
is what is reported: it is robust to how fast the machine is. To be robust to how busy
it is too (a shared VM's load drifts over seconds), the two are timed in many short
interleaved pairs and the median of the pairs' ratios is reported.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
from rich.console import Console
from rich.table import Table

import envs  # noqa: F401
from bench.common import write
from settings.cli import summary_of


def steps_per_second(env: gym.Env, steps: int, seed: int = 0) -> float:
    env.reset(seed=seed)
    env.action_space.seed(seed)
    sample, step, reset = env.action_space.sample, env.step, env.reset
    t0 = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = step(sample())
        if terminated or truncated:
            reset()
    return steps / (time.perf_counter() - t0)


def ppo_throughput(steps: int, n_envs: int = 4) -> float:
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)
    venv = make_vec_env("Offload-v0", n_envs=n_envs, seed=0, env_kwargs={"trace_source": "builtin"})
    model = PPO("MlpPolicy", venv, n_steps=512, batch_size=256, seed=0, device="cpu", verbose=0)
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps)
    return model.num_timesteps / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=summary_of(__doc__))
    parser.add_argument("--steps", type=int, default=20_000, help="steps per timed block")
    parser.add_argument("--ppo-steps", type=int, default=20_480)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved pairs")
    args = parser.parse_args(argv)
    offload = gym.make("Offload-v0", trace_source="builtin")
    cartpole = gym.make("CartPole-v1")
    rows = []
    for r in range(args.repeats):  # interleaved, so drift in machine load hits both alike
        o = steps_per_second(offload, args.steps, seed=r)
        c = steps_per_second(cartpole, args.steps, seed=r)
        rows.append({"offload_sps": o, "cartpole_sps": c, "ratio": o / c})
    best = max(rows, key=lambda x: x["ratio"])
    median_ratio = sorted(x["ratio"] for x in rows)[len(rows) // 2]
    ppo = ppo_throughput(args.ppo_steps)
    table = Table(title="environment speed (single process, random actions)")
    for col in ("run", "Offload-v0 steps/s", "CartPole-v1 steps/s", "ratio"):
        table.add_column(col, justify="right")
    for i, x in enumerate(rows):
        table.add_row(
            str(i), f"{x['offload_sps']:,.0f}", f"{x['cartpole_sps']:,.0f}", f"{x['ratio']:.2f}"
        )
    Console().print(table)
    print(
        f"median ratio {median_ratio:.2f} (goal >= 1.0); PPO training with 4 envs: "
        f"{ppo:,.0f} steps/s"
    )
    payload = {
        "runs": rows,
        "median_ratio": median_ratio,
        "best_ratio": best["ratio"],
        "ppo_train_steps_per_s_4_envs": ppo,
        "steps_per_run": args.steps,
    }
    print("wrote", write("env_speed", payload))
    return payload


if __name__ == "__main__":
    main()
