"""The bundle's policies (``runtime_hooks.c_policy``, ``runtime_hooks.onnx_policy``):
object size and time per decision.

    python -m bench.c_policy_speed [--policy runs/default/policy.npz] [--decisions 200000]

Generates the shipped policy's C (float32 and int8), compiles each with the system's C
compiler (``-O2``) into an object (its text and data sizes, ``size``), into a timing
program (``splitctl_decide`` on observations of Offload-v0's test split, in a loop,
timed with ``clock_gettime``) and into a shared library called from Python through
``ctypes``; beside them, the numpy policy's ``act`` and the ONNX policy's (onnxruntime,
one thread) in the same run.
"""

from __future__ import annotations

import argparse
import ctypes
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.common import write
from settings.cli import summary_of

TIMER = r"""
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <time.h>
#include "policy.h"
int main(int argc, char **argv) {
    static float obs[%(n)d][SPLITCTL_OBS_DIM];
    FILE *f = fopen(argv[1], "rb");
    if (!f || fread(obs, sizeof(float), %(n)d * SPLITCTL_OBS_DIM, f) != %(n)d * SPLITCTL_OBS_DIM)
        return 1;
    fclose(f);
    long decisions = %(decisions)d, checksum = 0;
    int action[3];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < decisions; ++i) {
        splitctl_decide(obs[i %% %(n)d], action);
        checksum += action[0] + action[1] + action[2];
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
    printf("%%.1f %%ld\n", ns / decisions, checksum);
    return 0;
}
"""


def _sizes(compiler: str, source: Path) -> tuple[int, int]:
    obj = source.with_suffix(".o")
    subprocess.run([compiler, "-std=c99", "-O2", "-c", str(source), "-o", str(obj)], check=True)
    text, data = (
        subprocess.run(["size", str(obj)], capture_output=True, text=True, check=True)
        .stdout.splitlines()[1]
        .split()[:2]
    )
    return int(text), int(data)


def main(argv: list[str] | None = None) -> dict:
    from envs import OffloadEnv
    from runtime_hooks.c_policy import write_c_policy
    from runtime_hooks.export import env_observations
    from runtime_hooks.policy_file import NumpyPolicy

    parser = argparse.ArgumentParser(description=summary_of(__doc__))
    parser.add_argument("--policy", type=Path, default=Path("runs/default/policy.npz"))
    parser.add_argument("--decisions", type=int, default=200_000)
    args = parser.parse_args(argv)
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or shutil.which("size") is None:
        raise SystemExit("error: this benchmark needs a C compiler (cc) and size(1)")
    policy = NumpyPolicy.load(args.policy)
    env = OffloadEnv(trace_source="builtin", trace_split="test", sample_split="test")
    observations = env_observations(env, 1000, seed=1)
    numpy_us = _act_us(policy, observations)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _, float_c, int8_c = write_c_policy(policy, folder)
        from runtime_hooks.onnx_policy import OnnxPolicy, write_onnx_policy

        onnx_us = _act_us(
            OnnxPolicy(write_onnx_policy(policy, folder / "policy.onnx")), observations
        )
        (folder / "obs.bin").write_bytes(np.ascontiguousarray(observations, np.float32).tobytes())
        (folder / "timer.c").write_text(
            TIMER % {"n": len(observations), "decisions": args.decisions}
        )
        rows = [
            _c_row(compiler, folder, name, source, observations)
            for name, source in (("float32", float_c), ("int8", int8_c))
        ]
    table = Table(title="the C policy (gcc -O2) against the numpy policy")
    for col in ("policy", "text+data bytes", "C ns/decision", "from Python (ctypes) µs"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["policy"],
            f"{r['text_bytes'] + r['data_bytes']:,}",
            f"{r['c_ns_per_decision']:,.0f}",
            f"{r['ctypes_us_per_decision']:.2f}",
        )
    Console().print(table)
    print(
        f"numpy policy act(): {numpy_us:.1f} µs per decision, ONNX (onnxruntime) "
        f"act(): {onnx_us:.1f} µs (same observations)"
    )
    payload = {
        "rows": rows,
        "numpy_us_per_decision": numpy_us,
        "onnx_us_per_decision": onnx_us,
        "decisions": args.decisions,
    }
    print("wrote", write("c_policy_speed", payload))
    return payload


def _c_row(compiler: str, folder: Path, name: str, source: Path, observations) -> dict:
    """One C policy's sizes, its time per decision in the timing program (``timer.c``
    and ``obs.bin`` in ``folder``) and through ``ctypes``."""
    text, data = _sizes(compiler, source)
    program = folder / f"timer_{name}"
    subprocess.run(
        [
            compiler,
            "-std=c99",
            "-O2",
            str(folder / "timer.c"),
            str(source),
            "-lm",
            "-o",
            str(program),
        ],
        check=True,
    )
    out = subprocess.run(
        [str(program), str(folder / "obs.bin")], capture_output=True, text=True, check=True
    ).stdout.split()
    return {
        "policy": name,
        "text_bytes": text,
        "data_bytes": data,
        "c_ns_per_decision": float(out[0]),
        "ctypes_us_per_decision": _ctypes_us(compiler, source, observations),
    }


def _act_us(policy, observations: np.ndarray) -> float:
    t0 = time.perf_counter()
    for _ in range(5):
        for o in observations:
            policy.act(o)
    return (time.perf_counter() - t0) / (5 * len(observations)) * 1e6


def c_library(compiler: str, source: Path):
    """``source`` compiled (``-O2``) into a shared library, ``splitctl_decide`` typed."""
    lib = source.with_suffix(".so")
    subprocess.run(
        [compiler, "-std=c99", "-O2", "-shared", "-fPIC", str(source), "-lm", "-o", str(lib)],
        check=True,
    )
    c = ctypes.CDLL(str(lib))
    c.splitctl_decide.argtypes = [ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int)]
    return c


def _ctypes_us(compiler: str, source: Path, observations: np.ndarray) -> float:
    c = c_library(compiler, source)
    obs = np.ascontiguousarray(observations, np.float32)
    pointers = [row.ctypes.data_as(ctypes.POINTER(ctypes.c_float)) for row in obs]
    action = (ctypes.c_int * 3)()
    t0 = time.perf_counter()
    for _ in range(5):
        for p in pointers:
            c.splitctl_decide(p, action)
    return (time.perf_counter() - t0) / (5 * len(pointers)) * 1e6


if __name__ == "__main__":
    main()
