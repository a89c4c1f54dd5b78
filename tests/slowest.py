"""Print the slowest tests of a `make test` (both sessions), from the durations file
tests/conftest.py writes when SPLITCTL_DURATIONS names it.

    python tests/slowest.py FILE [N]
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def slowest(path: Path, n: int = 15) -> list[tuple[float, str]]:
    """The ``n`` tests with the most seconds (setup, call and teardown together)."""
    seconds: dict[str, float] = defaultdict(float)
    for line in path.read_text().splitlines():
        row = json.loads(line)
        seconds[row["test"]] += row["seconds"]
    return sorted(((s, t) for t, s in seconds.items()), reverse=True)[:n]


def main(argv: list[str]) -> int:
    path = Path(argv[0])
    n = int(argv[1]) if len(argv) > 1 else 15
    if not path.is_file():
        print(f"no durations in {path}")
        return 0
    print(f"the {n} slowest tests (seconds, setup + call + teardown):")
    for seconds, test in slowest(path, n):
        print(f"{seconds:8.1f}  {test}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
