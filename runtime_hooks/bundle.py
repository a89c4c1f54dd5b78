"""A device bundle: one folder with what a device needs to decide, and a manifest.

    python -m runtime_hooks.export runs/default --bundle out/bundle

writes ``policy.npz`` (the numpy policy, ``runtime_hooks.policy_file``),
``policy.onnx`` (raw observation in, the action's three indices out, for onnxruntime:
``runtime_hooks.onnx_policy``), ``policy.c``, ``policy_int8.c`` and ``policy.h`` (the
policy and the observation builder in C99, ``runtime_hooks.c_policy``) and
``manifest.json``: the observation's fields in order, the action tables (cuts,
thresholds, the codec of every level at every cut), the deadline and the radios'
figures the observation uses, the model and scenario the run was trained on, and a
SHA-256 of every other file. ``check_bundle`` refuses a bundle whose files do not match
their hashes, naming the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from runtime_hooks.c_policy import write_c_policy
from runtime_hooks.onnx_policy import write_onnx_policy
from runtime_hooks.policy_file import NumpyPolicy, PolicyFileError
from telemetry.observation import OBS_NAMES

MANIFEST = "manifest.json"
FORMAT = "splitctl-bundle-v1"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_bundle(policy: NumpyPolicy, folder: str | Path, *, system, scenario_path: str) -> Path:
    """Write the bundle of ``policy`` (exported for ``system``) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = [
        policy.save(folder / "policy.npz"),
        write_onnx_policy(policy, folder / "policy.onnx"),
        *write_c_policy(policy, folder),
    ]
    m, p = policy.meta, system.profile
    manifest = {
        "format": FORMAT,
        "observation": list(OBS_NAMES),
        "actions": {
            "nvec": list(m.nvec),
            "cuts": list(range(m.nvec[0])),
            "thresholds": list(m.thresholds),
            "codecs_by_cut": [list(p.codecs_by_cut[c]) for c in range(p.n_blocks)],
            "table": policy.table.tolist(),
        },
        "deadline_s": m.deadline_s,
        "keep_alive_s": m.keep_alive_s,
        "radios": {name: {"tail_s": t, "tail_w": w} for name, (t, w) in sorted(m.radios.items())},
        "model_hash": m.profile_model_hash,
        "scenario": scenario_path,
        "source_run": m.source,
        "files": {f.name: sha256(f) for f in files},
    }
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def check_bundle(folder: str | Path) -> dict:
    """The bundle's manifest, once every file it lists matches its SHA-256."""
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PolicyFileError(f"{path}: not a readable bundle manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PolicyFileError(f"{path}: field 'format' is not {FORMAT}")
    for name, digest in manifest.get("files", {}).items():
        file = folder / name
        if not file.is_file():
            raise PolicyFileError(f"{folder}: {name} is listed in the manifest but missing")
        if sha256(file) != digest:
            raise PolicyFileError(
                f"{file}: its SHA-256 does not match the manifest's; the bundle was changed "
                "after it was written (export it again)"
            )
    return manifest


def check_against_run(folder: str | Path, run: str | Path, observations: int = 1000) -> float:
    """The bundle's hashes, its model against the run's, and the share of ``observations``
    observations of the run's scenario on which the bundle's policy decides as the run's
    model does (1.0 for a bundle exported from this run)."""
    from runtime_hooks.export import agreement, env_observations, export_run

    manifest = check_bundle(folder)
    _, ppo, env = export_run(run)
    if manifest["model_hash"] != env.system.profile.model_hash:
        raise PolicyFileError(
            f"{folder}: bundle for model {manifest['model_hash']}, the run {run} is of model "
            f"{env.system.profile.model_hash}"
        )
    bundled = NumpyPolicy.load(Path(folder) / "policy.npz")
    return agreement(bundled, ppo, env_observations(env, observations))


def main(argv: list[str] | None = None) -> int:
    """``python -m runtime_hooks.bundle DIR [--run RUN]``: check a bundle's files against
    its manifest and, given its run, its decisions against the run's model."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--run", type=Path, help="the training run it was exported from")
    parser.add_argument("--observations", type=int, default=1000)
    args = parser.parse_args(argv)
    try:
        if args.run is None:
            manifest = check_bundle(args.bundle)
            print(f"{args.bundle}: {len(manifest['files'])} files match their SHA-256")
            return 0
        agree = check_against_run(args.bundle, args.run, args.observations)
    except PolicyFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.bundle}: files match; decides as {args.run} on {agree:.2%} of "
        f"{args.observations} observations"
    )
    return 0 if agree == 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
