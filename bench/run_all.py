"""``make bench``: every benchmark, each printing a table and writing JSON."""

from bench import (
    c_policy_speed,
    env_speed,
    fleet_speed,
    model_speed,
    outage,
    runtime_speed,
    serve_backends,
    sweep_overhead,
)


def main() -> None:
    model_speed.main([])
    env_speed.main([])
    fleet_speed.main([])
    runtime_speed.main([])
    c_policy_speed.main([])
    outage.main([])
    serve_backends.main([])
    sweep_overhead.main([])


if __name__ == "__main__":
    main()
