"""A device bundle: one folder with what a device needs to decide, and a manifest.

    python -m runtime_hooks.export runs/default --bundle out/bundle

writes ``policy.npz`` (the numpy policy, ``runtime_hooks.policy_file``),
``policy.onnx`` (raw observation in, the action's three indices out, for onnxruntime:
``runtime_hooks.onnx_policy``), ``policy.c``, ``policy_int8.c`` and ``policy.h`` (the
policy and the observation builder in C99, ``runtime_hooks.c_policy``), the device's
part of the model as ONNX files (each block, each early exit, each learned bottleneck's
encoder: ``runtime_hooks.head``) and ``manifest.json``: the observation's fields in
order, the action tables (cuts, thresholds, the codec of every level at every cut), the
deadline and the radios' figures the observation uses, the model and scenario the run
was trained on, and a SHA-256 of every other file. ``check_bundle`` refuses a bundle
whose files do not match their hashes, naming the file (``runtime_hooks.check_bundle``
is its command line, and checks a bundle against its run).
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


def write_bundle(
    policy: NumpyPolicy, folder: str | Path, *, system, scenario_path: str, model=None
) -> Path:
    """Write the bundle of ``policy`` (exported for ``system``) into ``folder``; with
    ``model`` (``(model, spec)`` of the scenario), its device part as ONNX files too."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = [
        policy.save(folder / "policy.npz"),
        write_onnx_policy(policy, folder / "policy.onnx"),
        *write_c_policy(policy, folder),
    ]
    head = None
    if model is not None:
        head = _write_head(folder, system, *model)
        files += [folder / name for name in head["files"]]
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
        "head": head,
        "files": {f.name: sha256(f) for f in files},
    }
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def _write_head(folder: Path, system, model, spec) -> dict:
    """The model's device part as ONNX files (``runtime_hooks.head``), as the manifest
    lists it."""
    from profiles.bottleneck import load_for_profile
    from runtime_hooks.head import export_head

    bottlenecks = load_for_profile(system.profile, model, spec)
    written = export_head(model, spec, bottlenecks, folder)
    encoders = [
        {
            "cut": cut,
            "level": level,
            "file": f"encoder_cut{cut}_level{level}.onnx",
            "codec": f"latent{b.rate.bits}",
            "latent_shape": list(b.latent_shape),
        }
        for (cut, level), b in sorted(bottlenecks.items())
    ]
    return {"files": written, "input_shape": list(spec.input_shape), "encoders": encoders}


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
