"""What the device loop records of each request, and the summary of a run.

``RequestResult`` is one request's outcome as logged (one JSON line each);
``summarise`` turns a run's results into ``sim.metrics.summarise``'s figures plus the
controller's own cost. ``Answer`` and ``Offloaded`` are the loop's intermediate
records: who answered, and what sending a request to the cloud did.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np

from sim import metrics


@dataclass(frozen=True, kw_only=True)
class Answer:
    """An answer: who gave it (``path``: ``exit``, ``local``, ``cloud`` or
    ``fallback``), at which device-side exit (0 for the cloud), and what it said."""

    path: str
    exit_block: int
    prediction: int
    confidence: float


@dataclass(frozen=True, kw_only=True)
class Offloaded:
    """What sending a request to the cloud did: the answer (the cloud's, or a local
    fallback's), the bytes sent, the time on the network and in the server, why it fell
    back (``None`` when the cloud answered), the device seconds it added (the encoder,
    a fallback's blocks) and the radio and idle energy it cost."""

    answer: Answer
    sent_bytes: int
    network_s: float
    server_s: float
    server_queue_s: float
    fallback: str | None
    device_s: float
    energy_j: float


@dataclass(kw_only=True)
class RequestResult:
    """One request's outcome, as logged (one JSON line each)."""

    request_id: int
    sample: int | None
    arrival_s: float  # since the loop started
    cut: int
    threshold: int
    level: int
    path: str  # "exit" (an early exit fired), "local" (cut K), "cloud", "fallback"
    exit_block: int  # the block whose classifier answered on the device; 0 for the cloud
    prediction: int
    confidence: float
    label: int | None
    correct: bool | None
    latency_s: float  # arrival to answer
    wait_s: float  # arrival to decision (queueing behind earlier requests)
    decide_s: float  # the controller's decision
    device_s: float  # device compute (emulated speed unless --host-speed)
    network_s: float  # frame sent to answer received (0 when not sent)
    server_s: float  # the server's queueing + compute, as it reports
    sent_bytes: int
    energy_j: float
    # Why the cloud did not answer: "server_down" (the server was known to be down when
    # the request was decided: a cloud action became the deepest exit that meets the
    # deadline, and a local one was chosen on a dead link), "timeout", "server_error",
    # "connection_lost"; None when the cloud answered or was not needed.
    fallback: str | None
    deadline_miss: bool
    server_queue_s: float = 0.0  # the server's queueing alone, as it reports (part of server_s)
    carbon_g: float = 0.0  # grams of CO2e: its device energy and, answered by the cloud, the tail's


def summarise(results: list[RequestResult], requests: int) -> dict:
    """The run's summary (what ``--json`` writes): ``sim.metrics.summarise``'s figures
    and the controller's own cost."""
    summary = metrics.summarise(metrics.records_of_results(results), requests=requests)
    decide_s = np.array([r.decide_s for r in results])
    latency_s = sum(r.latency_s for r in results)
    summary.update(
        energy_mj_per_request=summary.pop("energy_mj", math.nan),
        controller_decide_p50_us=float(np.percentile(decide_s * 1e6, 50)) if results else None,
        controller_decide_p99_us=float(np.percentile(decide_s * 1e6, 99)) if results else None,
        controller_share_of_latency=float(decide_s.sum() / max(latency_s, 1e-12)),
    )
    return summary


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux and macOS report it; else current)."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (2**20 if sys.platform == "darwin" else 2**10)
    except ImportError:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
