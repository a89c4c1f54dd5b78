"""The SHA-256 of every file a training run writes, checked before anything is loaded.

A run folder holds pickles: Stable-Baselines3's model zips and VecNormalize's state run
code when they are loaded. ``train.py`` therefore records the hash of each file it
writes in ``runs/NAME/files.sha256.json`` (updated at every checkpoint, validation and
at the end), and every command that loads a run (``--policy``, ``--resume``, the
exporter) checks the files it is about to open first: a file changed or damaged after
the run wrote it is refused with a message naming it. The check guards against
accidents and swapped files, not against someone who rewrites the record as well:
treat a run folder from elsewhere like code (docs/security.md).

    python -m agents.run_files RUN            # check every recorded file
    python -m agents.run_files RUN --record   # record the files of a run you trust

The check exits 1 when a recorded file differs or is gone (its finding), 2 when there
is nothing to check (not a training run, no record, an unreadable record); ``--record``
writes only into a training run (a folder with ``config.json``), never into any folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from settings.tables import InputError

RECORD = "files.sha256.json"
UNRECORDED = ("tb",)  # TensorBoard's event files: written by the run, never loaded


class RunFilesError(InputError):
    """A run's file differs from its recorded hash, or the record is missing."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _recorded_files(run: Path) -> list[Path]:
    return sorted(
        p
        for p in run.rglob("*")
        if p.is_file()
        and p.name != RECORD
        and p.relative_to(run).parts[0] not in UNRECORDED
        and not p.name.endswith(".tmp")
    )


def _write(run: Path, hashes: dict[str, str]) -> None:
    """Replace the record atomically: a run killed mid-write keeps the previous one."""
    tmp = run / f"{RECORD}.tmp"
    tmp.write_text(json.dumps(dict(sorted(hashes.items())), indent=1))
    os.replace(tmp, run / RECORD)


def seal(run: Path) -> None:
    """Record the hash of every file of ``run`` (TensorBoard logs aside)."""
    run = Path(run)
    _write(run, {p.relative_to(run).as_posix(): sha256(p) for p in _recorded_files(run)})


def read_record(run: Path) -> dict[str, str]:
    path = Path(run) / RECORD
    if not path.is_file():
        raise RunFilesError(
            f"{run}: no {RECORD}, so its files cannot be checked before they are unpickled; "
            f"train it again, or if you trust the folder record its files with "
            f"`python -m agents.run_files {run} --record`"
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFilesError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(record, dict) or not all(isinstance(v, str) for v in record.values()):
        raise RunFilesError(f"{path}: expected an object of file name -> SHA-256")
    for name in record:
        parts = Path(name).parts
        if not parts or Path(name).is_absolute() or ".." in parts:
            raise RunFilesError(
                f"{path}: {name!r} is not a file inside the run (a relative path without '..')"
            )
    return record


def update_record(run: Path, *files: Path) -> None:
    """Record the hashes of ``files`` that ``run`` just wrote (a checkpoint, the curve,
    the best model), the others' as they were: one hash per file written, where
    ``seal`` would hash every checkpoint again at every validation. A run without a
    record yet (interrupted before its first) is sealed whole."""
    run = Path(run)
    if not (run / RECORD).is_file():
        seal(run)
        return
    record = read_record(run)
    for path in files:
        record[Path(path).relative_to(run).as_posix()] = sha256(Path(path))
    _write(run, record)


def verify(run: Path, *files: Path, record: dict[str, str] | None = None) -> None:
    """Refuse (``RunFilesError`` naming the file) unless each of ``files`` has the hash
    ``run`` recorded when it wrote it (``record``: the record, when already read)."""
    run = Path(run)
    record = read_record(run) if record is None else record
    for path in files:
        name = Path(path).relative_to(run).as_posix()
        if name not in record:
            raise RunFilesError(
                f"{path}: not among the files {run / RECORD} records; the run did not write "
                "it, so it is not loaded"
            )
        if sha256(Path(path)) != record[name]:
            raise RunFilesError(
                f"{path}: its SHA-256 differs from the one {run / RECORD} recorded when the "
                "run wrote it (changed or damaged since); refusing to load it. Restore the "
                "file or train the run again; if you trust the folder as it is, record it "
                f"with `python -m agents.run_files {run} --record`"
            )


def record_file(path: Path) -> None:
    """Add ``path`` to the record of the run it lies in, when it lies in one (the
    exporter writing ``runs/NAME/policy.npz``)."""
    run = Path(path).resolve().parent
    if (run / RECORD).is_file():
        update_record(run, Path(path).resolve())


def copy_run(source: Path, target: Path, key: str, note: dict) -> Path:
    """``source`` (without its checkpoints) as ``target``, replacing it, with ``note``
    under ``key`` in its ``config.json`` (why it was copied: a seed or sweep
    selection), and the record of its files made anew."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoints", RECORD))
    config = json.loads((target / "config.json").read_text())
    config[key] = note
    (target / "config.json").write_text(json.dumps(config, indent=2))
    seal(target)
    return target


def check_is_run(folder: Path) -> None:
    """Refuse (``RunFilesError``) a path that is not a training run folder: one that
    ``train.py`` wrote, with its ``config.json``."""
    if not folder.is_dir():
        what = "a file" if folder.exists() else "not found"
        raise RunFilesError(f"{folder}: {what}; expected a training run folder (runs/NAME)")
    if not (folder / "config.json").is_file():
        raise RunFilesError(
            f"{folder}: not a training run (no config.json); only the folder of a run that "
            "train.py wrote has its files recorded"
        )


def check_files(run: Path) -> tuple[int, list[str]]:
    """How many files ``run`` records, and what is wrong with them (changed, damaged or
    gone), one line each; a missing or unreadable record raises ``RunFilesError``."""
    record = read_record(run)
    problems = []
    for name in record:
        path = run / name
        if not path.is_file():
            problems.append(f"{path}: recorded in {run / RECORD}, but missing")
            continue
        try:
            verify(run, path, record=record)
        except RunFilesError as exc:
            problems.append(str(exc))
    return len(record), problems


def main(argv: list[str] | None = None) -> int:
    """Check a run's files against its record (exit 1 where one differs), or record
    them; an input error (not a run, no or a bad record) is one line, exit 2."""
    parser = argparse.ArgumentParser(description="Check (or record) a run's file hashes.")
    parser.add_argument("run", type=Path, help="training run folder (runs/NAME)")
    parser.add_argument(
        "--record",
        action="store_true",
        help="record the files as they are now (only for a run you trust)",
    )
    args = parser.parse_args(argv)
    try:
        check_is_run(args.run)
        if args.record:
            seal(args.run)
            print(f"recorded {len(read_record(args.run))} files in {args.run / RECORD}")
            return 0
        count, problems = check_files(args.run)
    except RunFilesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(
            f"{args.run}: {len(problems)} of {count} recorded files differ from the record "
            "or are gone",
            file=sys.stderr,
        )
        return 1
    print(f"{args.run}: all {count} recorded files match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
