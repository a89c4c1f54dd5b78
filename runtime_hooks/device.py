"""The device loop's command line: serve requests from the test split with the real
model's head and a cloud server (``runtime_hooks.device_loop``).

    python -m runtime_hooks.device --server 127.0.0.1:9300 --requests 200 \\
        [--policy runs/default/policy.npz] [--trace FILE] [--rate 2] [--json summary.json]

``--trace`` shapes the link to a bandwidth trace: through a shaping TCP relay
(``--shaper relay``, portable) or the kernel's netem in a network namespace (``--shaper
tc``: Linux, root). ``--host-speed`` runs at the host's speed instead of the
scenario device's. The summary (``--json``) is ``runtime_hooks.device_records.summarise``'s;
``--log FILE`` also writes one JSON line per request (no log without it).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime_hooks.device_loop import DEFAULT_POLICY, DeviceLoop, policy_choice
from runtime_hooks.device_records import peak_rss_mb, summarise
from settings.cli import (
    UsageError,
    check_options,
    fraction,
    non_negative,
    option,
    output_file,
    parse,
    positive,
    run_cli,
    summary_of,
    within,
)
from settings.cli import seed as seed_range

# The loop draws every request's image and arrival before the first one and keeps each
# result for the summary; a million requests at 2 a second would last almost six days.
MAX_REQUESTS = 1_000_000
MANY_REQUESTS = "every request's input and result stay in memory; at 2 a second, 6 days"
# What the inputs and results of one run may take: the images are copied up front, and
# each result (a ``RequestResult``, then a row of the summary's arrays) is about 2 KB.
MEMORY_BUDGET_BYTES = 2 * 2**30
RESULT_BYTES = 2048


def server_address(text: str) -> tuple[str, int]:
    from runtime_hooks.relay import parse_address

    return parse_address(text)


@dataclass
class DeviceArgs:
    """The device loop's command line; checked before anything is written."""

    server: str = option(None, "cloud server HOST:PORT", required=True)
    scenario: Path | None = option(None, "scenario TOML (default: built-in): its model, data, "
                                   "device and radio", type=Path)  # fmt: skip
    policy: str | None = option(
        None,
        "policy file (default: shipped), or a heuristic's name (edgent, spinn, ...)",
        type=str,
        check=policy_choice,
    )
    bundle: Path | None = option(
        None, "device bundle (runtime_hooks.export --bundle): its ONNX head and policy, no "
        "torch", type=Path,
    )  # fmt: skip
    requests: int = option(100, "requests to serve", check=within(1, MAX_REQUESTS, MANY_REQUESTS))
    rate: float = option(2.0, "Poisson arrivals per second; 0: back to back", check=non_negative)
    trace: Path | None = option(None, "shape the link to this trace file", type=Path)
    shaper: str = option(
        "relay", "relay: a shaping TCP relay (portable); tc: netem in a network namespace "
        "(Linux, root, sch_netem; the server must listen on 0.0.0.0)", choices=("relay", "tc"),
    )  # fmt: skip
    radio: str | None = option(None, "catalog radio (default: by trace family)", type=str)
    host_speed: bool = option(False, "do not emulate the device speed")
    fallback_after_ms: float | None = option(None, "default: the deadline", type=float,
                                             check=positive)  # fmt: skip
    battery: float = option(1.0, "initial level (energy model)", check=fraction)
    seed: int = option(0, "seed of the images and arrivals", check=seed_range)
    log: Path | None = option(
        None,
        "write one JSON line per request to this file (default: no per-request log; the "
        "summary is printed, and written to --json)",
        type=Path,
        check=output_file,
    )
    json: Path | None = option(None, "write the summary here", type=Path, check=output_file)
    address: tuple[str, int] = field(default=("", 0), init=False)

    def __post_init__(self) -> None:
        check_options(self)
        try:
            self.address = server_address(self.server)
        except ValueError as exc:
            raise UsageError(f"--server: {exc}") from None
        if self.trace is not None and not self.trace.is_file():
            raise UsageError(f"--trace: {self.trace}: no such file")
        if self.bundle is not None and self.policy is not None:
            raise UsageError(
                f"--policy {self.policy} and --bundle {self.bundle}: a bundle carries its own "
                "policy; give one of them"
            )


def run_in_netem(args: DeviceArgs, uplink, port: int, radio: str | None) -> int:
    """Run this command again inside a ``NetemLink`` namespace, unshaped by a relay:
    the kernel shapes the link instead."""
    from runtime_hooks.netem import NetemUnavailable, run_in_namespace

    cmd = [sys.executable, "-m", "runtime_hooks.device", "--requests", str(args.requests),
           "--rate", str(args.rate), "--battery", str(args.battery),
           "--seed", str(args.seed)]  # fmt: skip
    for flag, value in (("--policy", args.policy), ("--bundle", args.bundle), ("--radio", radio),
                        ("--json", args.json), ("--log", args.log),
                        ("--fallback-after-ms", args.fallback_after_ms),
                        ("--scenario", args.scenario)):  # fmt: skip
        if value is not None:
            cmd += [flag, str(value)]
    if args.host_speed:
        cmd.append("--host-speed")
    try:
        return run_in_namespace(uplink, cmd, port)
    except NetemUnavailable as exc:
        print(f"error: --shaper tc: {exc}; use --shaper relay", file=sys.stderr)
        return 2


def check_radio(name: str, scenario) -> None:
    """``--radio``: a radio of the scenario's catalog, or a one-line refusal naming the
    closest one."""
    from profiles.catalog import load_catalog
    from settings.tables import closest

    catalog = load_catalog(scenario.catalog)
    if name not in catalog.radios:
        hint = closest(name, catalog.radios)
        tip = f"did you mean '{hint}'? " if hint else ""
        raise UsageError(
            f"--radio {name}: not in the catalog {catalog.path} ({tip}known: "
            f"{', '.join(sorted(catalog.radios))})"
        )


def run_device(args: DeviceArgs) -> int:
    from profiles.multiexit import data_for_profile
    from runtime_hooks.relay import RelayThread, ShapingRelay, uplink_for
    from sim import load_scenario

    scenario = load_scenario(args.scenario)
    check_memory(args.requests, scenario)
    if args.radio is not None:
        check_radio(args.radio, scenario)
    server = args.address
    uplink = uplink_for(str(args.trace), scenario) if args.trace else None
    # A policy or a bundle is refused before any file is written.
    radio = args.radio or (scenario.radio_for(uplink.family) if uplink else None)
    policy = None if args.bundle else args.policy  # a heuristic's name, a file or the shipped
    if args.bundle:
        from runtime_hooks.bundle import check_bundle

        check_bundle(args.bundle)
    if uplink is not None and args.shaper == "tc":
        return run_in_netem(args, uplink, server[1], radio)
    relay = None
    if uplink is not None:
        relay = RelayThread(ShapingRelay(server, uplink)).start()
        server = ("127.0.0.1", relay.port)
    loop = DeviceLoop.create(
        server, policy, scenario, radio=radio, battery_level=args.battery, bundle=args.bundle,
        emulate_device=not args.host_speed,
        fallback_after_s=None if args.fallback_after_ms is None else args.fallback_after_ms / 1e3,
        server_name=args.server + (" (through the shaping relay)" if relay else ""),
    )  # fmt: skip
    test = data_for_profile(loop.system.profile, loop.spec, scenario.data)["test"]
    rng = np.random.default_rng(args.seed)
    samples = rng.integers(len(test.labels), size=args.requests)
    arrivals = np.cumsum(rng.exponential(1.0 / args.rate, args.requests)) if args.rate > 0 else None
    with contextlib.ExitStack() as files:
        if args.log is not None:
            args.log.parent.mkdir(parents=True, exist_ok=True)
            loop.log = files.enter_context(open(args.log, "w"))
        if relay is not None:
            relay.relay.start_clock()
        results = loop.run(test.inputs[samples], test.labels[samples], arrivals, samples)
        loop.close()
    if relay is not None:
        relay.stop()
    summary = summarise(results, args.requests)
    summary["policy"] = str(args.bundle or args.policy or DEFAULT_POLICY)
    summary["server"] = server_summary(loop.link, args.server)
    summary["stale_answers"] = loop.stale_answers
    summary["battery_source"] = loop.controller.battery.source
    summary["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(summary, indent=2))
    if args.log is not None:
        print(f"per-request log: {args.log}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


def check_memory(requests: int, scenario) -> None:
    """Refuse, before anything starts, more requests than the memory budget holds for
    this scenario's model: each request's input is copied up front and its result kept."""
    from profiles.profile_io import load_profile

    profile = load_profile(scenario.profile)
    per_input = int(np.prod(profile.input_shape)) * (1 if profile.input_kind == "image" else 4)
    per_request = per_input + RESULT_BYTES
    if requests * per_request > MEMORY_BUDGET_BYTES:
        most = MEMORY_BUDGET_BYTES // per_request
        raise UsageError(
            f"--requests {requests:,}: every request's input ({per_input:,} bytes for this "
            f"model) and result stay in memory, {requests * per_request / 2**30:.1f} GiB; at "
            f"most {most:,} requests ({MEMORY_BUDGET_BYTES / 2**30:g} GiB)"
        )


def server_summary(link, address: str) -> dict:
    """Whether the server was reached, and for how long it was not."""
    now = time.monotonic()
    down_s = sum((back or now) - down for down, back in link.outages)
    return {
        "address": address,
        "reached": link.reconnects > 0,
        "outages": len(link.outages),
        "down_s": round(down_s, 3),
    }


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: run_device(parse(DeviceArgs, argv, summary_of(__doc__))))


if __name__ == "__main__":
    sys.exit(main())
