"""Shared helpers for the benchmarks: machine description and JSON output."""

from __future__ import annotations

import json
from pathlib import Path

from profiles.host import describe_machine

RESULTS = Path(__file__).resolve().parent / "results"


def write(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": describe_machine(), **payload}, indent=2))
    return path
