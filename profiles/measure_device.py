"""Bring your own device: time a model on the machine this runs on, as a catalog entry.

    python -m profiles.measure_device --model M:F --name NAME --out device.toml
                                      [--data M:F] [--power-from rpi4] [--repeats 200]
                                      [--replace]

Run it on the device itself (a Raspberry Pi, a phone under Termux, a laptop). It times
every block and exit of the model at batch 1 on one thread (median of ``--repeats``
runs) and every codec at every cut on real samples (``--data``; else random ones, whose
compressed sizes and times only approximate real data), and writes a device entry
``[devices.NAME]`` with those times, the model hash they belong to and the host's
description. A scenario then uses it with ``catalog = "device.toml"`` and
``device = "NAME"``; where a device entry has measured times, the simulator uses them
instead of scaling the profile's host times by GFLOP/s.

Power cannot be measured from software: the entry's ``active_power_w``,
``idle_power_w`` and ``battery_j`` are copied from a catalog device with cited figures
(``--power-from``), and the entry says so. ``--out`` names a catalog: an existing one
gains the entry (one of that name already there is refused, as it may hold cited
figures and their comments, unless ``--replace``); a new one starts as a copy of the
built-in catalog, so that its radios and cloud offers are there too.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from profiles import DEFAULT_CATALOG, codecs
from settings.cli import at_least, check_options, option, output_file, parse, run_cli, summary_of
from settings.tables import InputError

NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]+")


@dataclass
class MeasureArgs:
    """measure_device's command line."""

    model: str = option(None, "the model's build function, module:function or "
                        "path/to/file.py:function", required=True)  # fmt: skip
    name: str = option(None, "the device's name in the catalog ([devices.NAME])", required=True)
    out: Path = option(Path("device.toml"), "catalog to write the entry into", type=Path,
                       check=output_file)  # fmt: skip
    data: str | None = option(None, "the data's load function (default: random samples)",
                              type=str)  # fmt: skip
    power_from: str = option("rpi4", "catalog device whose cited power and battery to use")
    repeats: int = option(200, "timing runs per block, exit and codec", check=at_least(3))
    replace: bool = option(False, "replace an entry of --name already in --out")

    def __post_init__(self) -> None:
        check_options(self)
        if not NAME_PATTERN.fullmatch(self.name):
            raise InputError(f"--name: letters, digits, '_' and '-' only, got {self.name!r}")


def check_target(args: MeasureArgs) -> None:
    """Refuse, before anything is timed, an ``--out`` that is not a valid catalog, a
    ``--power-from`` it lacks, and a ``--name`` it already has (unless ``--replace``):
    an entry there may hold cited figures and their comments, which a measured entry
    would silently lose."""
    from profiles.catalog import CatalogError, load_catalog

    catalog = load_catalog(args.out if args.out.is_file() else DEFAULT_CATALOG)
    try:
        catalog.device(args.power_from)
    except CatalogError as exc:
        raise InputError(f"--power-from: {exc}") from None
    if args.out.is_file() and args.name in catalog.devices and not args.replace:
        raise InputError(
            f"--name {args.name}: [devices.{args.name}] already in {args.out}; pick another "
            "--name or --out (or --replace to replace it)"
        )


def samples_for(spec, data_ref: str | None, n: int = 64) -> np.ndarray:
    """Real test samples where data is named, else random ones of the model's shape."""
    if data_ref is not None:
        from profiles.multiexit import load_data

        return load_data(data_ref, spec)["test"].inputs[:n]
    rng = np.random.default_rng(0)
    shape = (n, *spec.input_shape)
    if len(spec.input_shape) == 3 and spec.input_shape[0] in (1, 3):
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.normal(size=shape).astype(np.float32)


def measure(args: MeasureArgs) -> dict:
    """The device entry's fields."""
    import torch

    from profiles.catalog import load_catalog
    from profiles.multiexit import build_model, input_kind
    from profiles.profile import (
        Plan,
        count_flops,
        describe_host,
        measure_encode_time,
        measure_latency,
    )

    power = load_catalog(DEFAULT_CATALOG if not args.out.is_file() else args.out).device(
        args.power_from
    )
    model, spec = build_model(args.model)
    inputs = samples_for(spec, args.data)
    kind = input_kind(spec, inputs.dtype)
    plan = Plan(spec, kind, codecs.codecs_by_cut(spec.n_blocks, kind))
    torch.set_num_threads(1)
    latency = measure_latency(model, spec, args.repeats)
    encode = measure_encode_time(model, plan, inputs, max(args.repeats // 10, 3))
    flops, _ = count_flops(model, spec)
    host = describe_host()
    gflops = sum(flops) / sum(latency["block_s"]) / 1e9
    return {
        "description": (
            f"{args.name}: {host['cpu']} ({host['machine']}), one thread; block, exit and "
            f"codec times measured for model {spec.model_hash} on {host['date']}; power and "
            f"battery are [devices.{args.power_from}]'s cited figures, not measured"
        ),
        "gflops": round(gflops, 4),
        "active_power_w": power.active_power_w,
        "idle_power_w": power.idle_power_w,
        "battery_j": power.battery_j,
        "model_hash": spec.model_hash,
        "measured_on": f"{host['cpu']}, {host['machine']}, Python {host['python']}, "
        f"torch {host['torch']}, {host['date']}",
        "block_s": [float(v) for v in latency["block_s"]],
        "exit_s": [float(v) for v in latency["exit_s"]],
        "encode_s": [[float(v) for v in row] for row in encode],
    }


def entry_toml(name: str, fields: dict) -> str:
    """``[devices.NAME]`` as TOML text (numbers in full precision)."""

    def value(v) -> str:
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return f"{v:.6g}" if isinstance(v, float) else str(v)

    lines = [f"[devices.{name}]", "# Written by python -m profiles.measure_device (seconds)."]
    lines += [f"{key} = {value(v)}" for key, v in fields.items()]
    return "\n".join(lines) + "\n"


def write_entry(out: Path, name: str, fields: dict) -> None:
    """Add (or replace: ``check_target`` allows that only with ``--replace``) the entry
    in the catalog ``out``, a copy of the built-in one if it does not exist yet; the
    result is loaded back to check it."""
    from profiles.catalog import load_catalog

    text = out.read_text() if out.is_file() else DEFAULT_CATALOG.read_text()
    # An entry runs from its table header to the next header (or the end).
    pattern = re.compile(rf"^\[devices\.{re.escape(name)}\]\n.*?(?=^\[|\Z)", re.S | re.M)
    entry = entry_toml(name, fields) + "\n"
    text = pattern.sub(lambda _: entry, text) if pattern.search(text) else (
        text.rstrip("\n") + "\n\n" + entry)  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text)
    load_catalog(tmp).device(name)  # what was written reads back
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        args = parse(MeasureArgs, argv, summary_of(__doc__))
        check_target(args)
        fields = measure(args)
        write_entry(args.out, args.name, fields)
        total = sum(fields["block_s"]) * 1e3
        blocks = ", ".join(f"{v * 1e6:.0f}" for v in fields["block_s"])
        print(f"wrote [devices.{args.name}] to {args.out}: blocks {blocks} µs ({total:.2f} ms "
              f"in all), {fields['gflops']:.2f} effective GFLOP/s")  # fmt: skip
        print(f'use it in a scenario: catalog = "{args.out}", device = "{args.name}"')
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
