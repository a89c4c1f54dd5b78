"""The scenario's ``[capacity]`` table: how big the shared cloud is (``sim.cloud``
serves a fleet's requests with it)."""

from __future__ import annotations

from dataclasses import dataclass

from settings.tables import check_fields, custom, integer, number


@dataclass(frozen=True)
class Capacity:
    """The serving tier's size: the scenario's ``[capacity]`` table.

    ``workers = 0`` and ``concurrency = 0`` (the default): no limit, which is what one
    device with the cloud to itself sees."""

    workers: int = integer(0, low=0, high=100_000, doc="IaaS workers; 0: no queue")
    max_batch: int = integer(8, low=1, high=4096, doc="IaaS: most requests in one batch")
    concurrency: int = integer(0, low=0, high=1_000_000, doc="FaaS instances; 0: no limit")
    throttle_retry_s: float = number(
        0.1,
        low=0.0,
        low_inclusive=False,
        high=3600.0,
        doc="FaaS: a throttled request retries after this",
    )
    batch_times: str = custom(
        lambda v, w: _batch_times_path(v, w),
        "builtin",
        doc="runtime_hooks.measure_cloud JSON (IaaS with workers); builtin: the shipped one",
    )

    def __post_init__(self) -> None:
        from sim.scenario import ScenarioError

        check_fields(self, "capacity", ScenarioError)

    @property
    def unlimited(self) -> bool:
        return self.workers == 0 and self.concurrency == 0


def _batch_times_path(value, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a path or 'builtin', got {value!r}")  # where: added
    return value
