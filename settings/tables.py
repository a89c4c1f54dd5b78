"""One validator for plain-data settings, whether they come from a TOML table or Python.

A settings class is a dataclass whose fields are declared with ``number``, ``integer``,
``flag``, ``choice`` or ``custom``; its ``__post_init__`` calls ``check_fields``, so
``Workload(deadline_s=float("nan"))`` fails exactly as ``deadline_s = nan`` in a file
does. ``from_table`` builds one from a TOML table and refuses unknown keys, naming the
closest known key. Every error names the field (``[workload].deadline_s``) and the
value; loaders prefix the file.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any


class InputError(ValueError):
    """Bad input from the user: a file, a field, a flag or a value, which the message
    names. The project's input errors (traces, scenario, catalog, profile, weights,
    runs, policy files, settings) derive from it, so a command line can report any of
    them as one line (``settings.cli.run_cli``)."""


class SettingsError(InputError):
    """A setting is missing, unknown, of the wrong type or out of range."""


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name most like ``name`` (a likely typo), or ``None``."""
    matches = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return matches[0] if matches else None


def check_keys(
    raw: dict, known: Iterable[str], where: str, error: type[Exception] = SettingsError
) -> None:
    """Refuse keys of ``raw`` that are not in ``known``, suggesting the closest."""
    known = list(known)
    for key in raw:
        if key not in known:
            hint = closest(key, known)
            tip = f"; did you mean '{hint}'?" if hint else f"; known: {', '.join(known)}"
            raise error(f"{where}: unknown key '{key}'{tip}")


def check_number(
    value: Any,
    where: str,
    *,
    low: float = -math.inf,
    low_inclusive: bool = True,
    high: float = math.inf,
    error: type[Exception] = SettingsError,
) -> float:
    """A real number in range. Infinity passes only where ``high`` is infinite."""
    if isinstance(value, bool) or getattr(value, "dtype", None) in (bool, "bool"):  # not 1.0
        raise error(f"{where}: expected a number, got {value!r}")
    if not isinstance(value, int | float):
        try:  # numpy scalars and other real numbers, but never strings
            if isinstance(value, str | bytes):
                raise TypeError
            value = float(value)
        except (TypeError, ValueError):
            raise error(f"{where}: expected a number, got {value!r}") from None
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not (value > 0 and high == math.inf)):
        raise error(f"{where}: {value} is not finite")
    below = value < low if low_inclusive else value <= low
    if below or value > high:
        sign = ">=" if low_inclusive else ">"
        raise error(f"{where}: {value} out of range (need {sign} {low} and <= {high})")
    return value


def check_integer(
    value: Any,
    where: str,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    error: type[Exception] = SettingsError,
) -> int:
    """An integer in ``[low, high]``; ``2.7`` is refused, not rounded (``3.0`` passes)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise error(f"{where}: expected an integer, got {value!r}")
    value = int(value)
    if value < low or value > high:
        raise error(f"{where}: {value} out of range (need >= {low:g} and <= {high:g})")
    return value


def check_choice(
    value: Any, choices: Iterable[str], where: str, error: type[Exception] = SettingsError
) -> str:
    choices = tuple(choices)
    if value not in choices:
        hint = closest(str(value), choices) if isinstance(value, str) else None
        tip = f" (did you mean '{hint}'?)" if hint else ""
        raise error(f"{where}: must be one of {', '.join(choices)}, got {value!r}{tip}")
    return value


@dataclass(frozen=True)
class Rule:
    """How one field is checked: ``kind`` is number, integer, flag, choice or custom."""

    kind: str
    low: float = -math.inf
    high: float = math.inf
    low_inclusive: bool = True
    choices: tuple[str, ...] = ()
    check: Callable[[Any, str], Any] | None = None

    def apply(self, value: Any, where: str, error: type[Exception]) -> Any:
        if self.kind == "number":
            return check_number(
                value, where, low=self.low, low_inclusive=self.low_inclusive, high=self.high,
                error=error,
            )  # fmt: skip
        if self.kind == "integer":
            return check_integer(value, where, low=self.low, high=self.high, error=error)
        if self.kind == "flag":
            if not isinstance(value, bool):
                raise error(f"{where}: expected true or false, got {value!r}")
            return value
        if self.kind == "choice":
            return check_choice(value, self.choices, where, error)
        try:
            return self.check(value, where)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, error):
                raise
            raise error(f"{where}: {exc}") from None


def _declare(rule: Rule, default: Any, default_factory: Any, doc: str):
    meta = {"rule": rule, "doc": doc}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def number(
    default: Any = MISSING,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_inclusive: bool = True,
    doc: str = "",
):
    """A real-valued field in ``[low, high]`` (``(low, high]`` unless inclusive)."""
    return _declare(Rule("number", low, high, low_inclusive), default, MISSING, doc)


def integer(default: Any = MISSING, *, low: float = -math.inf, high: float = math.inf, doc=""):
    return _declare(Rule("integer", low, high), default, MISSING, doc)


def flag(default: Any = MISSING, *, doc: str = ""):
    return _declare(Rule("flag"), default, MISSING, doc)


def choice(default: Any = MISSING, *, choices: Iterable[str], doc: str = ""):
    return _declare(Rule("choice", choices=tuple(choices)), default, MISSING, doc)


def custom(
    check: Callable[[Any, str], Any],
    default: Any = MISSING,
    *,
    default_factory: Any = MISSING,
    doc: str = "",
):
    """A field checked (and normalised) by ``check(value, where)``, which returns the
    value to keep and raises ``ValueError`` or ``TypeError`` naming what is wrong."""
    return _declare(Rule("custom", check=check), default, default_factory, doc)


def check_fields(obj: Any, section: str, error: type[Exception] = SettingsError) -> None:
    """Validate (and normalise) every declared field of a settings dataclass in place;
    errors name ``[section].field``. Call it from ``__post_init__``."""
    for f in fields(obj):
        rule = f.metadata.get("rule")
        if rule is not None:
            value = rule.apply(getattr(obj, f.name), f"[{section}].{f.name}", error)
            object.__setattr__(obj, f.name, value)


def from_table(cls: type, raw: Any, where: str, error: type[Exception] = SettingsError):
    """A settings dataclass from a TOML table (``None``: all defaults); unknown keys
    are refused, naming the closest known key."""
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise error(f"{where}: expected a table, got {raw!r}")
    declared = [f for f in fields(cls) if f.init]
    check_keys(raw, [f.name for f in declared], where, error)
    for f in declared:
        if f.name not in raw and f.default is MISSING and f.default_factory is MISSING:
            raise error(f"{where}: key '{f.name}' is missing")
    return cls(**raw)


def read_toml(path: Path, what: str, error: type[Exception]) -> dict:
    """A TOML file as a dict; every failure (missing, unreadable, binary, syntax) is an
    ``error`` naming the file."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: {what} file not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not a {what} file") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file (not UTF-8), cannot be a {what} file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what} file ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML ({exc})") from None
