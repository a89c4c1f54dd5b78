"""Synthetic traces whose statistics were fitted to the real ones.

Model per family: the log of the non-zero capacity follows an AR(1) process
``x' = mu + phi (x - mu) + sigma sqrt(1 - phi^2) eps`` sampled every ``dt_s``, and
outages (capacity 0) follow a two-state Markov chain with entry probability
``p_enter`` and exit probability ``p_exit`` per sample. ``python -m traces.fit``
estimates the parameters from ``../shared/traces`` and stores them in
``traces/params/synthetic.json``, so the project runs without the real files.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from traces.trace import Trace, TraceError

PARAMS_FILE = Path(__file__).resolve().parent / "params" / "synthetic.json"


@dataclass(frozen=True)
class SyntheticParams:
    family: str
    dt_s: float
    mu: float  # mean of log(bit/s) of non-zero samples
    sigma: float  # its standard deviation
    phi: float  # lag-1 autocorrelation of log rate
    p_enter: float  # P(outage next | not in outage)
    p_exit: float  # P(no outage next | in outage)
    n_files: int
    n_samples: int


def fit(family: str, traces: list[Trace]) -> SyntheticParams:
    """Estimate the model from real (downlink) traces of one family."""
    logs, pairs_a, pairs_b, dts = [], [], [], []
    enter = exits = stay_up = stay_down = 0
    for tr in traces:
        r = np.asarray(tr.rates_bps)
        dts.append(np.median(np.diff(tr.starts_s)) if len(r) > 1 else 1.0)
        up = r > 0
        enter += int(np.sum(up[:-1] & ~up[1:]))
        stay_up += int(np.sum(up[:-1] & up[1:]))
        exits += int(np.sum(~up[:-1] & up[1:]))
        stay_down += int(np.sum(~up[:-1] & ~up[1:]))
        lr = np.log(r[up])
        logs.append(lr)
        both = up[:-1] & up[1:]
        pairs_a.append(np.log(r[:-1][both]))
        pairs_b.append(np.log(r[1:][both]))
    x = np.concatenate(logs)
    a, b = np.concatenate(pairs_a), np.concatenate(pairs_b)
    phi = float(np.corrcoef(a, b)[0, 1]) if len(a) > 2 else 0.0
    return SyntheticParams(
        family=family,
        dt_s=float(np.median(dts)),
        mu=float(x.mean()),
        sigma=float(x.std()),
        phi=float(np.clip(phi, 0.0, 0.999)),
        p_enter=enter / max(enter + stay_up, 1),
        p_exit=exits / max(exits + stay_down, 1) if enter else 1.0,
        n_files=len(traces),
        n_samples=int(len(x)),
    )


def generate(params: SyntheticParams, duration_s: float, seed: int, name: str = "") -> Trace:
    """One synthetic downlink trace of ``duration_s`` seconds."""
    rng = np.random.default_rng(seed)
    n = max(2, int(np.ceil(duration_s / params.dt_s)))
    x = np.empty(n)
    x[0] = rng.normal(params.mu, params.sigma)
    noise = rng.normal(0.0, params.sigma * np.sqrt(1.0 - params.phi**2), n)
    for i in range(1, n):
        x[i] = params.mu + params.phi * (x[i - 1] - params.mu) + noise[i]
    up = np.empty(n, bool)
    up[0] = True
    u = rng.random(n)
    for i in range(1, n):
        up[i] = (u[i] >= params.p_enter) if up[i - 1] else (u[i] < params.p_exit)
    rates = np.where(up, np.exp(x), 0.0)
    rates[0] = np.exp(x[0])  # never start in an outage: keeps every trace usable
    starts = tuple((np.arange(n) * params.dt_s).tolist())
    return Trace(
        name or f"synthetic_{params.family}_{seed}",
        params.family,
        starts,
        tuple(rates.tolist()),
        n * params.dt_s,
    )


def load_params(path: Path = PARAMS_FILE) -> dict[str, SyntheticParams]:
    try:
        raw = json.loads(path.read_text())
        return {fam: SyntheticParams(**p) for fam, p in raw["families"].items()}
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise TraceError(f"{path}: synthetic parameters unreadable ({exc})") from exc


def save_params(params: dict[str, SyntheticParams], path: Path = PARAMS_FILE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "fitted_by": "python -m traces.fit",
        "families": {fam: asdict(p) for fam, p in sorted(params.items())},
    }
    path.write_text(json.dumps(body, indent=2) + "\n")
