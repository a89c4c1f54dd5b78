"""Bandwidth traces: loading real files, splitting them, and synthesising new ones."""

from traces.loaders import FAMILIES, load_5g_csv, load_dir, load_trace, load_two_column
from traces.sets import load_directory, load_families, split_of
from traces.trace import Trace, TraceError

__all__ = [
    "FAMILIES",
    "Trace",
    "TraceError",
    "load_5g_csv",
    "load_dir",
    "load_directory",
    "load_families",
    "load_trace",
    "load_two_column",
    "split_of",
]
