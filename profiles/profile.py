"""Measure a trained multi-exit model and write its profile.

    python -m profiles.profile [--model M:F] [--data M:F] [--out FILE] [--quick]
    python -m profiles.profile --latency-only --out FILE   # re-time on this host

Any model and data of the contract in ``profiles.multiexit`` (default: the built-in
CNN and Fashion-MNIST); shapes, the class count, the block count, which blocks have
exits and which codecs apply at cut 0 all come from the model and its data. What is
measured, and how, is described in ``profiles/profile_io.py``. Latencies are taken on
this host at batch 1 with one thread (median of ``--repeats`` runs after a warm-up);
everything else is computed on every sample of the ``val`` and ``test`` splits.
``--quick`` measures a subset (for tests), never a shipped profile.

``--out`` must end in ``.npz`` (numpy would append it to any other name) and, where it
exists, be a profile: the command replaces it (``make profile`` re-measures the shipped
one, the default, on purpose), but never another kind of file, a file inside a
training run (its files are recorded), nor a shipped profile with a ``--quick`` one.
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress

from profiles import DEFAULT_PROFILE, codecs
from profiles.host import describe_machine, median_time
from profiles.leakage import AttackOptions, applicability, reconstruction_ssim, train_inversion
from profiles.multiexit import (
    ModelSpec,
    build_model,
    forward_all,
    head,
    input_kind,
    load_data,
    tail,
    to_model_input,
)
from profiles.profile_io import (
    LEAKAGE_METRIC,
    NOT_A_PROFILE,
    SPLITS,
    is_profile_file,
    load_profile,
    save_profile,
)
from settings.cli import UsageError, at_least, check_options, option, output_file, parse, run_cli

console = Console()
BATCH = 500
LEAK_EVAL = 1000  # test samples scored per cut and level
BUILTIN_MODEL, BUILTIN_DATA = "profiles.model:build", "profiles.dataset:load"


def describe_host() -> dict:
    return {**describe_machine(), "torch": torch.__version__, "threads": 1,
            "date": dt.date.today().isoformat()}  # fmt: skip


# -- FLOPs, from the leaf modules a forward pass runs ---------------------------------------
_FREE = ("Dropout", "Identity", "Flatten", "Unflatten")
_POINTWISE = ("ReLU", "ReLU6", "LeakyReLU", "Hardswish", "Hardsigmoid", "SiLU", "GELU",
              "Sigmoid", "Tanh", "ELU", "Softmax")  # fmt: skip


def _leaf_flops(module: torch.nn.Module, inputs, output) -> int:
    name = type(module).__name__
    out = output.numel() if isinstance(output, torch.Tensor) else 0
    if isinstance(module, torch.nn.modules.conv._ConvNd):
        per_output = module.in_channels // module.groups * int(np.prod(module.kernel_size))
        return 2 * out * per_output + (out if module.bias is not None else 0)
    if isinstance(module, torch.nn.Linear):
        return 2 * out * module.in_features + (out if module.bias is not None else 0)
    if name.startswith(("BatchNorm", "LayerNorm", "GroupNorm", "InstanceNorm")):
        return 2 * out
    if name in _FREE:
        return 0
    if "Pool" in name:
        return inputs[0].numel() if inputs and isinstance(inputs[0], torch.Tensor) else out
    return out  # pointwise activations, and anything else, as one operation per output


def count_flops(model, spec: ModelSpec) -> tuple[list[int], list[int]]:
    """FLOPs of each block and each exit head at batch 1 (0 where there is no exit),
    counted from the shapes the leaf modules see (multiply-add = 2; operations written
    outside modules, such as a residual addition, are not counted)."""
    seen: list[int] = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(_leaf_flops(m, i, o)))
             for m in model.modules() if not list(m.children())]  # fmt: skip
    blocks, exits = [], []
    try:
        with torch.inference_mode():
            h = torch.zeros(1, *spec.input_shape)
            for block, exit_head in zip(model.blocks, model.exits, strict=True):
                seen.clear()
                h = block(h)
                blocks.append(sum(seen))
                seen.clear()
                if exit_head is not None:
                    exit_head(h)
                exits.append(sum(seen))
    finally:
        for hook in hooks:
            hook.remove()
    return blocks, exits


def leaf_ops(module: torch.nn.Module | None) -> int:
    """Operators a forward pass dispatches (leaf modules)."""
    if module is None:
        return 0
    return sum(1 for m in module.modules() if not list(m.children()))


def measure_latency(model, spec: ModelSpec, repeats: int) -> dict:
    """Per-block and per-exit latency at batch 1 on one thread (0 where there is no
    exit), and the framework's per-operator dispatch cost (a chain of ReLUs on a
    1-element tensor), so that the compute part of each latency can be told from the
    interpreter's part."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    block_s, exit_s = [], []
    try:
        with torch.inference_mode():
            h = torch.rand(1, *spec.input_shape)
            for block, exit_head in zip(model.blocks, model.exits, strict=True):
                x = h
                block_s.append(median_time(lambda: block(x), repeats, repeats // 5))  # noqa: B023
                h = block(x)
                y = h
                exit_s.append(
                    0.0 if exit_head is None
                    else median_time(lambda: exit_head(y), repeats, repeats // 5)  # noqa: B023
                )  # fmt: skip
            chain = torch.nn.Sequential(*[torch.nn.ReLU() for _ in range(16)])
            tiny = torch.rand(1)
            dispatch = median_time(lambda: chain(tiny), repeats, repeats // 5) / 16
    finally:
        torch.set_num_threads(threads)
    return {"block_s": block_s, "exit_s": exit_s, "dispatch_s": dispatch}


# -- per-sample measurements ------------------------------------------------------------
def batched(fn, x: np.ndarray) -> np.ndarray:
    """``fn`` (torch in, torch out) over ``x`` in batches of ``BATCH``, as numpy."""
    with torch.inference_mode():
        return np.concatenate(
            [fn(torch.from_numpy(x[i : i + BATCH])).numpy() for i in range(0, len(x), BATCH)]
        )


def exit_answers(model, has_exit, x: np.ndarray, labels: np.ndarray):
    """Each exit's max-softmax confidence and correctness on every sample of ``x``
    (``(K, N)`` each; 0 and wrong where a block has no exit)."""
    k, n = len(has_exit), len(labels)
    outs = [[] for _ in range(k)]
    with torch.inference_mode():
        for i in range(0, n, BATCH):
            for b, logits in enumerate(forward_all(model, torch.from_numpy(x[i : i + BATCH]))):
                outs[b].append(None if logits is None else torch.softmax(logits, 1))
    exit_conf = np.zeros((k, n), np.float32)
    exit_correct = np.zeros((k, n), bool)
    for b in range(k):
        if has_exit[b]:
            probs = torch.cat(outs[b])
            exit_conf[b] = probs.max(1).values.numpy()
            exit_correct[b] = probs.argmax(1).numpy() == labels
    return exit_conf, exit_correct


@dataclass(frozen=True)
class Plan:
    """What the profiler measures for one model: which codecs at each cut."""

    spec: ModelSpec
    kind: str  # "image" or "tensor"
    codecs_by_cut: list[list[str]]

    @property
    def n_levels(self) -> int:
        return len(self.codecs_by_cut[0])

    def sent_at(self, model, cut: int, inputs: np.ndarray, x: np.ndarray) -> np.ndarray:
        """What leaves the device at ``cut``: the uint8 images themselves where the
        image codecs apply, else the model's input or a block's output (float32)."""
        if cut == 0:
            return inputs if self.kind == "image" else x
        return batched(lambda t: head(model, cut, t), x)

    def received(self, cut: int, decoded: np.ndarray) -> np.ndarray:
        """What the cloud's tail takes from the decoded tensors."""
        return to_model_input(decoded) if cut == 0 and self.kind == "image" else decoded


def measure_split(model, plan: Plan, inputs: np.ndarray, labels: np.ndarray, progress) -> dict:
    """Exit confidences, encoded sizes and post-codec correctness for every sample."""
    k, n_levels, n = plan.spec.n_blocks, plan.n_levels, len(labels)
    x = to_model_input(inputs)
    exit_conf, exit_correct = exit_answers(model, plan.spec.has_exit, x, labels)
    sent_bytes = np.zeros((k, n_levels, n), np.int32)
    final_correct = np.zeros((k, n_levels, n), bool)
    task = progress.add_task("  encode/decode/tail", total=k * n_levels)
    decoded_for_leak: dict[tuple[int, int], np.ndarray] = {}
    for cut in range(k):
        sent = plan.sent_at(model, cut, inputs, x)
        for level in range(n_levels):
            codec = codecs.get(plan.codecs_by_cut[cut][level])
            sent_bytes[cut, level], decoded = codecs.round_trip(codec, sent)
            received = plan.received(cut, decoded)
            logits = batched(lambda t, c=cut: tail(model, c, t), received)
            final_correct[cut, level] = logits.argmax(1) == labels
            decoded_for_leak[(cut, level)] = received[:LEAK_EVAL]
            progress.advance(task)
    progress.remove_task(task)
    return {
        "labels": labels.astype(np.int16 if plan.spec.n_classes < 2**15 else np.int64),
        "exit_conf": exit_conf,
        "exit_correct": exit_correct,
        "sent_bytes": sent_bytes,
        "final_correct": final_correct,
        "_decoded": decoded_for_leak,
    }


def measure_encode_time(model, plan: Plan, inputs: np.ndarray, repeats: int) -> np.ndarray:
    """Host time to encode one sample, per cut and level. Tensor codecs are timed on a
    batch of 64 samples (fewer for large tensors) encoded as one tensor and divided by
    the batch size: the per-call
    interpreter overhead is amortised and what remains is the per-sample work
    (quantisation, DEFLATE) that a device's C implementation would also do. Image
    codecs run in C inside Pillow and are timed per image (median over 8 images)."""
    k = plan.spec.n_blocks
    out = np.zeros((k, plan.n_levels))
    largest = max(int(np.prod(s)) for s in plan.spec.activation_shapes[:k])
    n = max(1, min(64, codecs.MAX_ELEMENTS // largest))  # one tensor within the codec's cap
    x = to_model_input(inputs[:n])
    for cut in range(k):
        sent = plan.sent_at(model, cut, inputs[:n], x)
        for level in range(plan.n_levels):
            codec = codecs.get(plan.codecs_by_cut[cut][level])
            if cut == 0 and plan.kind == "image":
                out[cut, level] = statistics.median(
                    median_time(lambda s=s, c=codec: c.encode(s), repeats, 3) for s in sent[:8]
                )
            else:
                batch = sent.reshape(len(sent), -1) if sent.ndim > codecs.MAX_NDIM else sent
                out[cut, level] = median_time(lambda b=batch, c=codec: c.encode(b), repeats, 3)
                out[cut, level] /= len(sent)
    return out


def measure_leakage(model, plan: Plan, splits, decoded_test, n_train: int, epochs: int,
                    progress) -> tuple[np.ndarray, str | None]:  # fmt: skip
    """SSIM of the inversion attack per cut and level, or NaN and the reason where it
    does not apply."""
    k, spec = plan.spec.n_blocks, plan.spec
    train_x = to_model_input(splits["train"].inputs[:n_train])
    why = applicability(spec.input_shape, float(train_x.min()), float(train_x.max()))
    if why is not None:
        return np.full((k, plan.n_levels), np.nan), why
    leakage = np.zeros((k, plan.n_levels))
    target = to_model_input(splits["test"].inputs[:LEAK_EVAL])
    train_t = torch.from_numpy(train_x)
    task = progress.add_task("  inversion attacks", total=k)
    for cut in range(k):
        decoder = None
        if cut > 0:
            acts = torch.from_numpy(batched(lambda t, c=cut: head(model, c, t), train_x))
            decoder = train_inversion(acts, train_t, epochs=epochs, seed=cut)
        for level in range(plan.n_levels):
            leakage[cut, level] = reconstruction_ssim(decoder, decoded_test[(cut, level)], target)
        progress.advance(task)
    return leakage, None


# -- the command ---------------------------------------------------------------------------
def portable_reference(ref: str, folder: Path) -> str:
    """A ``file.py:function`` reference as the profile keeps it: its path relative to
    the profile's folder (``Profile.model_ref`` resolves it from there), so that the
    folder can move as a whole; module references unchanged."""
    import os

    target, _, name = ref.rpartition(":")
    if not target.endswith(".py"):
        return ref
    return f"{os.path.relpath(Path(target).resolve(), folder.resolve())}:{name}"


def run(model_ref: str, data_ref: str, out: Path, *, quick: bool, repeats: int,
        leak_train: int, leak_epochs: int) -> None:  # fmt: skip
    model, spec = build_model(model_ref)
    splits = load_data(data_ref, spec)
    if quick:
        splits = {name: type(s)(s.inputs[:300], s.labels[:300]) for name, s in splits.items()}
    kind = input_kind(spec, splits["test"].inputs.dtype)
    plan = Plan(spec, kind, codecs.codecs_by_cut(spec.n_blocks, kind))
    console.print(
        f"profiling {model_ref} (hash {spec.model_hash}) on {data_ref}: {spec.n_blocks} blocks, "
        f"input {spec.input_shape} ({kind}), {spec.n_classes} classes"
    )
    latency = measure_latency(model, spec, repeats)
    flops, exit_flops = count_flops(model, spec)
    arrays: dict[str, np.ndarray] = {
        "block_flops": np.array(flops, np.int64),
        "exit_flops": np.array(exit_flops, np.int64),
        "block_params": np.array([sum(p.numel() for p in b.parameters()) for b in model.blocks]),
        "block_host_s": np.array(latency["block_s"]),
        "exit_host_s": np.array(latency["exit_s"]),
        "block_ops": np.array([leaf_ops(b) for b in model.blocks]),
        "exit_ops": np.array([leaf_ops(e) for e in model.exits]),
        "dispatch_host_s": np.array(latency["dispatch_s"]),
        "encode_host_s": measure_encode_time(
            model, plan, splits["test"].inputs, 10 if quick else 50
        ),
    }
    decoded_test = None
    with Progress(console=console) as progress:
        for split in SPLITS:
            progress.console.print(f"split {split}: {len(splits[split].labels)} samples")
            measured = measure_split(model, plan, splits[split].inputs, splits[split].labels,
                                     progress)  # fmt: skip
            decoded = measured.pop("_decoded")
            if split == "test":
                decoded_test = decoded
            arrays.update({f"{split}_{key}": value for key, value in measured.items()})
        arrays["leakage"], why = measure_leakage(
            model, plan, splits, decoded_test, leak_train, leak_epochs, progress
        )
    meta = {
        "model_hash": spec.model_hash,
        "model": portable_reference(model_ref, out.parent),
        "data": portable_reference(data_ref, out.parent),
        "input_shape": list(spec.input_shape),
        "input_kind": kind,
        "n_classes": spec.n_classes,
        "has_exit": list(spec.has_exit),
        "activation_shapes": [list(s) for s in spec.activation_shapes],
        "codecs_by_cut": plan.codecs_by_cut,
        "host": describe_host(),
        "latency_repeats": repeats,
        "leakage_metric": LEAKAGE_METRIC,
        "leakage_reason": why,
        "leakage_attack": {"train_samples": leak_train, "epochs": leak_epochs, "eval": LEAK_EVAL},
        "quick": quick,
    }
    replaced = " (it replaces the profile that was there)" if out.exists() else ""
    save_profile(out, meta, arrays)
    console.print(f"wrote {out}{replaced}")


def remeasure_latency(path: Path, repeats: int, model_ref: str | None = None) -> None:
    """Re-time an existing profile's latencies on this host (blocks, exits, dispatch,
    encoders), keeping everything else. For a quiet machine, or another host."""
    import json

    profile = load_profile(path)
    model, spec = build_model(model_ref or profile.meta["model"])
    profile.check_model_hash(spec.model_hash)
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays.pop("meta_json")))
    latency = measure_latency(model, spec, repeats)
    arrays["block_host_s"] = np.array(latency["block_s"])
    arrays["exit_host_s"] = np.array(latency["exit_s"])
    arrays["dispatch_host_s"] = np.array(latency["dispatch_s"])
    splits = load_data(profile.meta["data"], spec)
    plan = Plan(spec, profile.input_kind, profile.codecs_by_cut)
    arrays["encode_host_s"] = measure_encode_time(model, plan, splits["test"].inputs, 50)
    meta["host"] = describe_host()
    meta["latency_repeats"] = repeats
    save_profile(path, meta, arrays)
    console.print(
        f"re-timed {path}: blocks "
        + ", ".join(f"{v * 1e6:.1f}" for v in latency["block_s"])
        + " µs"
    )


def profile_out(path: Path) -> Path:
    """``--out``: a ``.npz`` file (``np.savez`` appends the suffix to any other name, so
    the file written would not be the one named) that can be created, outside any
    training run (``output_file``), and if it exists a profile, which is what the
    command replaces."""
    if not path.name.endswith(".npz") or path.name == ".npz":
        raise ValueError(f"must name a .npz file (a profile), got {path}")
    output_file(path)
    if path.exists() and not is_profile_file(path):
        raise ValueError(f"{path} exists and is {NOT_A_PROFILE}; it is not replaced")
    return path


def _shipped(path: Path) -> bool:
    """Whether ``path`` is a profile shipped with the project (``profiles/data``)."""
    return path.resolve().parent == DEFAULT_PROFILE.resolve().parent


@dataclass
class ProfileArgs(AttackOptions):
    """The profiler's command line."""

    model: str = option(BUILTIN_MODEL, "the model's build function, module:function or "
                        "path/to/file.py:function")  # fmt: skip
    data: str = option(BUILTIN_DATA, "the data's load function, module:function or "
                       "path/to/file.py:function")  # fmt: skip
    out: Path = option(DEFAULT_PROFILE, "the profile to write (.npz)", type=Path,
                       check=profile_out)  # fmt: skip
    repeats: int = option(400, "timing runs per block and exit", check=at_least(3))
    quick: bool = option(
        False, "300 samples per split, at most 30 timing runs and 600 attack samples (tests)"
    )
    latency_only: bool = option(False, "re-time the latencies of an existing profile (--out)")

    def __post_init__(self) -> None:
        check_options(self)
        if self.latency_only and not self.out.exists():
            raise UsageError(
                f"--latency-only re-times an existing profile; --out {self.out} does not exist"
            )
        if self.quick and not self.latency_only and _shipped(self.out):
            raise UsageError(
                f"--quick measures 300 samples per split, never a shipped profile; --out "
                f"{self.out} is one: name another file"
            )


def main(argv: list[str] | None = None) -> int:
    def run_profile() -> int:
        args = parse(ProfileArgs, argv, "Measure a multi-exit model into a profile.")
        if args.latency_only:
            explicit = args.model if args.model != BUILTIN_MODEL else None
            remeasure_latency(args.out, args.repeats, explicit)
            return 0
        if args.quick:  # caps: smaller figures given with it are kept
            args.repeats = min(args.repeats, 30)
            args.leak_train = min(args.leak_train, 600)
            args.leak_epochs = min(args.leak_epochs, 1)
        run(args.model, args.data, args.out, quick=args.quick, repeats=args.repeats,
            leak_train=args.leak_train, leak_epochs=args.leak_epochs)  # fmt: skip
        return 0

    return run_cli(run_profile)


if __name__ == "__main__":
    sys.exit(main())
