"""Command-line arguments as a dataclass, validated before a script does anything.

A script declares its arguments once, as fields made with ``option`` (the help text
and the check beside the field, in the spirit of CleanRL's ``Args``)::

    @dataclass
    class Args:
        timesteps: int = option(1000, "PPO steps", check=at_least(1))
        resume: bool = option(False, "continue the last checkpoint")

    args = parse(Args, argv, "what the script does")

``--timesteps`` comes from the field's name; argparse converts the types (and exits 2
on ``--timesteps abc``), each ``check`` then validates the value and ``Args`` may add
checks across fields in ``__post_init__``. ``run_cli`` reports the project's input
errors as one line with exit code 2 and Ctrl-C as exit code 130, without a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import MISSING, field, fields
from pathlib import Path
from typing import Any

from settings.tables import InputError, SettingsError


class UsageError(SettingsError):
    """A command-line argument is invalid; the message names the flag."""


def option(
    default: Any = MISSING,
    help: str = "",
    *,
    type: Callable[[str], Any] | None = None,
    check: Callable[[Any], Any] | None = None,
    choices: tuple[str, ...] | None = None,
    metavar: str | None = None,
    required: bool = False,
    positional: bool = False,
):
    """A command-line argument. ``type`` converts the text (default: the default's
    type); ``check(value)`` returns the value to keep or raises ``ValueError`` saying
    what is wrong (the flag is added to the message). A ``bool`` default of ``False``
    makes a switch; ``positional`` an argument without a flag (required)."""
    meta = {"help": help, "type": type, "check": check, "choices": choices,
            "metavar": metavar, "required": required, "positional": positional}  # fmt: skip
    return field(default=None if default is MISSING else default, metadata=meta)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def parser_for(cls: type, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    for f in fields(cls):
        m = f.metadata
        if "help" not in m:
            continue
        if f.default is False and m["type"] is None:
            parser.add_argument(flag_name(f.name), dest=f.name, action="store_true", help=m["help"])
            continue
        convert = m["type"] or (type(f.default) if f.default is not None else str)
        if m.get("positional"):
            parser.add_argument(f.name, type=convert, help=m["help"], metavar=m["metavar"])
            continue
        parser.add_argument(
            flag_name(f.name), dest=f.name, type=convert, default=f.default, help=m["help"],
            choices=m["choices"], metavar=m["metavar"], required=m["required"],
        )  # fmt: skip
    return parser


def check_options(args: Any) -> None:
    """Apply every field's ``check``; ``UsageError`` names the flag. Call it from the
    arguments' ``__post_init__``."""
    for f in fields(args):
        check = f.metadata.get("check")
        value = getattr(args, f.name)
        if check is None or value is None:
            continue
        try:
            setattr(args, f.name, check(value))
        except (ValueError, TypeError) as exc:
            name = f.name.upper() if f.metadata.get("positional") else flag_name(f.name)
            raise UsageError(f"{name}: {exc}") from None


def summary_of(doc: str | None) -> str:
    """A module docstring's first paragraph on one line: a command's ``--help``
    description (its first line alone can stop mid-sentence)."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def parse(cls: type, argv: list[str] | None, description: str):
    """Parse ``argv`` into ``cls`` (validated)."""
    namespace = parser_for(cls, description).parse_args(argv)
    return cls(**vars(namespace))


# -- checks -------------------------------------------------------------------------
def at_least(low: int) -> Callable[[int], int]:
    def check(value: int) -> int:
        if value < low:
            raise ValueError(f"must be >= {low}, got {value}")
        return value

    return check


def positive(value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"must be a finite number > 0, got {value}")
    return value


def non_negative(value: float) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"must be a finite number >= 0, got {value}")
    return value


def fraction(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"must be in [0, 1], got {value}")
    return value


def _shown(number: float) -> str:
    """``10,000`` and ``0.5``: a limit as a message shows it."""
    return f"{number:,}" if isinstance(number, int) else f"{number:,g}"


def within(
    low: float, high: float, why: str = "", *, above_low: bool = False
) -> Callable[[float], float]:
    """A finite number from ``low`` (excluded with ``above_low``) to ``high``. ``why``
    says what the upper limit protects (memory, time) and joins the message of a value
    past it, so that the user learns both the limit and its reason."""

    def check(value: float) -> float:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value}")
        if value < low or (above_low and value == low):
            raise ValueError(f"must be {'>' if above_low else '>='} {_shown(low)}, got {value}")
        if value > high:
            reason = f" ({why})" if why else ""
            raise ValueError(f"must be at most {_shown(high)}{reason}, got {value}")
        return value

    return check


def like_field(cls: type, name: str, table: str) -> Callable[[float], float]:
    """The range a settings dataclass declares for field ``name`` (``settings.tables``;
    ``table``: its TOML table, like ``[ppo]``), as a flag's check: a flag that sets a
    config value is refused naming the flag, not the config file, with the same limits."""
    rule = {f.name: f for f in fields(cls)}[name].metadata["rule"]
    return within(rule.low, rule.high, f"the limit of {table}.{name}")


def int_list(low: int, high: int, why: str = "") -> Callable[[str], list[int]]:
    """Integers separated by commas (``8,32,64``), each within ``low..high`` (see
    ``within``); an empty item or one that is not an integer is refused, naming it."""
    each = within(low, high, why)

    def check(text: str) -> list[int]:
        items = text.split(",")
        values = []
        for item in items:
            try:
                values.append(int(item.strip()))
            except ValueError:
                what = repr(item.strip()) if item.strip() else "an empty item"
                raise ValueError(
                    f"expected integers separated by commas (e.g. 8,32), got {what} in {text!r}"
                ) from None
        for value in values:
            try:
                each(value)
            except ValueError as exc:
                where = f" in {text!r}" if len(values) > 1 else ""
                raise ValueError(f"{exc}{where}") from None
        return values

    return check


def seed(value: int) -> int:
    """A seed numpy, torch and Stable-Baselines3 all accept."""
    if not 0 <= value < 2**32:
        raise ValueError(f"must be in 0..{2**32 - 1}, got {value}")
    return value


def port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError(f"must be a TCP port in 0..65535, got {value}")
    return value


MAX_NAME_BYTES = 200  # file systems allow 255 bytes in a name; suffixes need the rest


def plain_name(value: str) -> str:
    """A name that stays inside its parent folder: no separator, not empty, not a
    dot name (a run name becomes ``runs/NAME``, which ``--overwrite`` deletes)."""
    bad = "/\\\0" + os.sep + (os.altsep or "")
    if not value or value in (".", "..") or any(c in value for c in bad):
        raise ValueError(
            f"must be a plain name (no '/' or '\\', not empty, not '.' or '..'), got {value!r}"
        )
    if value != value.strip():
        raise ValueError(f"must not start or end with spaces, got {value!r}")
    if any(not c.isprintable() for c in value):
        raise ValueError(f"must not hold a newline or another control character, got {value!r}")
    if len(value.encode()) > MAX_NAME_BYTES:
        raise ValueError(
            f"must be at most {MAX_NAME_BYTES} bytes (a file name, with room for suffixes such "
            f"as -seed3), got {len(value.encode())}"
        )
    return value


# A training run's folder holds this record of its files (agents.run_files): no command
# but train.py (and the exporter, into its own run) writes there.
RUN_RECORD = "files.sha256.json"


def training_run_holding(path: Path) -> Path | None:
    """The training run folder ``path`` lies in (or is), or ``None``."""
    path = Path(path).resolve()
    for folder in [path, *path.parents]:
        if (folder / RUN_RECORD).is_file():
            return folder
    return None


def _outside_runs(path: Path) -> None:
    run = training_run_holding(path)
    if run is not None:
        raise ValueError(
            f"{path} is inside the training run {run}, whose files only train.py writes; "
            "name a path outside it"
        )


def output_file(path: Path) -> Path:
    """A file to write: refused up front when it names a folder, when its folder
    cannot be created (a parent is a file, or not writable), or when it lies inside a
    training run (a command would overwrite the run's model or config)."""
    if path.is_dir():
        raise ValueError(f"{path} is a directory; name a file")
    _creatable(path.parent, path)
    _outside_runs(path)
    return path


def output_dir(path: Path) -> Path:
    """A folder to write into: refused up front when it names a file, cannot be
    created, or lies inside a training run."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file; name a directory")
    _creatable(path, path)
    _outside_runs(path)
    return path


def _creatable(folder: Path, target: Path) -> None:
    for ancestor in [folder, *folder.parents]:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise ValueError(f"{ancestor} is a file, so {target} cannot be created")
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise ValueError(f"{ancestor} is not writable, so {target} cannot be created")
            return


# -- running ------------------------------------------------------------------------
def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def run_cli(main: Callable[[], int]) -> int:
    """Run a script's ``main``: the project's input errors (``InputError``: traces,
    scenario, catalog, profile, weights, runs, settings) become ``error: ...`` and exit
    code 2; Ctrl-C exits 130. Anything else is a bug and keeps its traceback. Warnings
    print as one ``warning: ...`` line."""
    warnings.formatwarning = _one_line_warning
    try:
        return main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
