"""Measure a trained multi-exit model and write its profile.

    python -m profiles.profile [--weights FILE] [--out FILE] [--quick]

What is measured, and how, is described in ``profiles/profile_io.py``. Latencies are
taken on this host at batch 1 with one thread (median of ``--repeats`` runs after a
warm-up); everything else is computed on every sample of the ``val`` and ``test``
splits. ``--quick`` measures a subset (for tests), never the shipped profile.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress

from profiles import DEFAULT_PROFILE, DEFAULT_WEIGHTS, codecs
from profiles.dataset import load_splits, to_tensor_input
from profiles.host import describe_machine, median_time
from profiles.leakage import reconstruction_ssim, train_inversion
from profiles.model import MultiExitCNN, load_model, model_hash
from profiles.profile_io import LEAKAGE_METRIC, SPLITS, save_profile

console = Console()


def describe_host() -> dict:
    return {**describe_machine(), "torch": torch.__version__, "threads": 1,
            "date": dt.date.today().isoformat()}  # fmt: skip


def block_flops(model: MultiExitCNN) -> tuple[list[int], list[int]]:
    """FLOPs of each block and of each exit head, counted from the layer shapes."""
    arch, blocks, exits = model.arch, [], []
    c_in, size = arch.in_channels, arch.image_size
    for b, c_out in enumerate(arch.channels, start=1):
        hw = size * size
        flops = 2 * c_in * 9 * c_out * hw + 2 * c_out * hw + c_out * hw  # conv, BN, ReLU
        if b in arch.pool_after:
            flops += c_out * hw
            size //= 2
        blocks.append(flops)
        pooled = c_out * (size // 2) ** 2
        exits.append(c_out * size * size + 2 * pooled * arch.n_classes)
        c_in = c_out
    return blocks, exits


def leaf_ops(module: torch.nn.Module) -> int:
    """Operators a forward pass dispatches (leaf modules)."""
    return sum(1 for m in module.modules() if not list(m.children()))


def measure_latency(model: MultiExitCNN, repeats: int) -> dict[str, list[float] | float]:
    """Per-block and per-exit latency at batch 1 on one thread, and the framework's
    per-operator dispatch cost (a chain of ReLUs on a 1-element tensor), so that the
    compute part of each latency can be told from the interpreter's part."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    block_s, exit_s = [], []
    try:
        with torch.inference_mode():
            h = torch.rand(1, *model.arch.activation_shape(0))
            for b in range(1, model.n_blocks + 1):
                block, exit_head, x = model.blocks[b - 1], model.exits[b - 1], h
                block_s.append(median_time(lambda: block(x), repeats, repeats // 5))  # noqa: B023
                h = block(x)
                y = h
                exit_s.append(median_time(lambda: exit_head(y), repeats, repeats // 5))  # noqa: B023
            chain = torch.nn.Sequential(*[torch.nn.ReLU() for _ in range(16)])
            tiny = torch.rand(1)
            dispatch = median_time(lambda: chain(tiny), repeats, repeats // 5) / 16
    finally:
        torch.set_num_threads(threads)
    return {"block_s": block_s, "exit_s": exit_s, "dispatch_s": dispatch}


def _activations(model: MultiExitCNN, x: torch.Tensor, cut: int) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate(
            [model.head(cut, x[i : i + 1000]).numpy() for i in range(0, len(x), 1000)]
        )


def _tail_correct(model: MultiExitCNN, cut: int, h: np.ndarray, labels: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        preds = np.concatenate(
            [
                model.tail(cut, torch.from_numpy(h[i : i + 1000])).argmax(1).numpy()
                for i in range(0, len(h), 1000)
            ]
        )
    return preds == labels


def measure_split(model: MultiExitCNN, images: np.ndarray, labels: np.ndarray, progress) -> dict:
    """Exit confidences, encoded sizes and post-codec correctness for every sample."""
    k, n_levels, n = model.n_blocks, codecs.N_LEVELS, len(labels)
    x = torch.from_numpy(to_tensor_input(images))
    with torch.inference_mode():
        outs = [
            torch.cat(o)
            for o in zip(
                *(model.forward_all(x[i : i + 1000]) for i in range(0, n, 1000)), strict=True
            )
        ]  # noqa: E501
    probs = [torch.softmax(o, 1) for o in outs]
    exit_conf = np.stack([p.max(1).values.numpy() for p in probs]).astype(np.float32)
    exit_correct = np.stack([(p.argmax(1).numpy() == labels) for p in probs])
    sent_bytes = np.zeros((k, n_levels, n), np.int32)
    final_correct = np.zeros((k, n_levels, n), bool)
    task = progress.add_task("  encode/decode/tail", total=k * n_levels)
    decoded_for_leak: dict[tuple[int, int], np.ndarray] = {}
    for cut in range(k):
        sent = images if cut == 0 else _activations(model, x, cut)
        for level in range(n_levels):
            codec = codecs.get(codecs.codec_name(cut, level))
            decoded = np.empty(sent.shape, np.float32 if cut else np.uint8)
            for i in range(n):
                blob = codec.encode(sent[i])
                sent_bytes[cut, level, i] = len(blob)
                decoded[i] = codec.decode(blob)
            received = to_tensor_input(decoded) if cut == 0 else decoded
            final_correct[cut, level] = _tail_correct(model, cut, received, labels)
            decoded_for_leak[(cut, level)] = received[:LEAK_EVAL]
            progress.advance(task)
    progress.remove_task(task)
    return {
        "labels": labels.astype(np.int16),
        "exit_conf": exit_conf,
        "exit_correct": exit_correct,
        "sent_bytes": sent_bytes,
        "final_correct": final_correct,
        "_decoded": decoded_for_leak,
    }


def measure_encode_time(model: MultiExitCNN, images: np.ndarray, repeats: int) -> np.ndarray:
    """Host time to encode one sample, per cut and level. Activation codecs are timed
    on a batch of 64 samples encoded as one tensor and divided by 64: the per-call
    interpreter overhead is amortised and what remains is the per-sample work
    (quantisation, DEFLATE) that a device's C implementation would also do. Image
    codecs run in C inside Pillow and are timed per image (median over 8 images)."""
    k = model.n_blocks
    out = np.zeros((k, codecs.N_LEVELS))
    x = torch.from_numpy(to_tensor_input(images[:64]))
    for cut in range(k):
        for level in range(codecs.N_LEVELS):
            codec = codecs.get(codecs.codec_name(cut, level))
            if cut == 0:
                out[cut, level] = statistics.median(
                    median_time(lambda s=s, c=codec: c.encode(s), repeats, 3) for s in images[:8]
                )
            else:
                batch = _activations(model, x, cut)
                out[cut, level] = median_time(lambda b=batch, c=codec: c.encode(b), repeats, 3)
                out[cut, level] /= 64
    return out


LEAK_EVAL = 1000  # test images scored per cut and level


def measure_leakage(model, splits, decoded_test, n_train: int, epochs: int, progress) -> np.ndarray:
    k = model.n_blocks
    leakage = np.zeros((k, codecs.N_LEVELS))
    target = to_tensor_input(splits["test"].images[:LEAK_EVAL])
    train_x = torch.from_numpy(to_tensor_input(splits["train"].images[:n_train]))
    task = progress.add_task("  inversion attacks", total=k)
    for cut in range(k):
        decoder = None
        if cut > 0:
            acts = torch.from_numpy(_activations(model, train_x, cut))
            decoder = train_inversion(acts, train_x, epochs=epochs, seed=cut)
        for level in range(codecs.N_LEVELS):
            leakage[cut, level] = reconstruction_ssim(decoder, decoded_test[(cut, level)], target)
        progress.advance(task)
    return leakage


def run(weights: Path, out: Path, *, quick: bool, repeats: int, leak_train: int, leak_epochs: int):
    model = load_model(weights)
    digest = model_hash(model)
    splits = load_splits()
    if quick:
        splits = {name: type(s)(s.images[:300], s.labels[:300]) for name, s in splits.items()}
    console.print(f"profiling {weights} (hash {digest})")
    latency = measure_latency(model, repeats)
    flops, exit_flops = block_flops(model)
    arrays: dict[str, np.ndarray] = {
        "block_flops": np.array(flops, np.int64),
        "exit_flops": np.array(exit_flops, np.int64),
        "block_params": np.array([sum(p.numel() for p in b.parameters()) for b in model.blocks]),
        "block_shape": np.array([model.arch.activation_shape(b) for b in range(1, 6)]),
        "block_host_s": np.array(latency["block_s"]),
        "exit_host_s": np.array(latency["exit_s"]),
        "block_ops": np.array([leaf_ops(b) for b in model.blocks]),
        "exit_ops": np.array([leaf_ops(e) for e in model.exits]),
        "dispatch_host_s": np.array(latency["dispatch_s"]),
        "encode_host_s": measure_encode_time(model, splits["test"].images, 10 if quick else 50),
    }
    decoded_test = None
    with Progress(console=console) as progress:
        for split in SPLITS:
            progress.console.print(f"split {split}: {len(splits[split].labels)} samples")
            measured = measure_split(model, splits[split].images, splits[split].labels, progress)
            decoded = measured.pop("_decoded")
            if split == "test":
                decoded_test = decoded
            arrays.update({f"{split}_{key}": value for key, value in measured.items()})
        arrays["leakage"] = measure_leakage(
            model, splits, decoded_test, leak_train, leak_epochs, progress
        )
    meta = {
        "model_hash": digest,
        "weights": weights.name,
        "arch": model.arch.to_dict(),
        "dataset": "Fashion-MNIST (Xiao, Rasul, Vollgraf, 2017)",
        "host": describe_host(),
        "latency_repeats": repeats,
        "codecs": {
            "input": list(codecs.INPUT_CODECS),
            "activation": list(codecs.ACTIVATION_CODECS),
        },
        "leakage_metric": LEAKAGE_METRIC,
        "leakage_attack": {"train_images": leak_train, "epochs": leak_epochs, "eval": LEAK_EVAL},
        "quick": quick,
    }
    save_profile(out, meta, arrays)
    console.print(f"wrote {out}")


def remeasure_latency(weights: Path, path: Path, repeats: int) -> None:
    """Re-time an existing profile's latencies on this host (blocks, exits, dispatch,
    encoders), keeping everything else. For a quiet machine, or another host."""
    import json

    model = load_model(weights)
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays.pop("meta_json")))
    if meta["model_hash"] != model_hash(model):
        raise SystemExit(
            f"error: {path}: profile of model {meta['model_hash']}, weights are {model_hash(model)}"
        )
    latency = measure_latency(model, repeats)
    arrays["block_host_s"] = np.array(latency["block_s"])
    arrays["exit_host_s"] = np.array(latency["exit_s"])
    arrays["dispatch_host_s"] = np.array(latency["dispatch_s"])
    images = load_splits()["test"].images
    arrays["encode_host_s"] = measure_encode_time(model, images, 50)
    meta["host"] = describe_host()
    meta["latency_repeats"] = repeats
    save_profile(path, meta, arrays)
    console.print(
        f"re-timed {path}: blocks "
        + ", ".join(f"{v * 1e6:.1f}" for v in latency["block_s"])
        + " µs"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Measure a multi-exit model into a profile.")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--out", type=Path, default=DEFAULT_PROFILE)
    parser.add_argument("--repeats", type=int, default=400)
    parser.add_argument("--leak-train", type=int, default=10000)
    parser.add_argument("--leak-epochs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="300 samples per split (tests)")
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="re-time the latencies of an existing profile (--out) on this host",
    )
    args = parser.parse_args(argv)
    if args.latency_only:
        remeasure_latency(args.weights, args.out, args.repeats)
        return
    if args.quick:
        args.repeats, args.leak_train, args.leak_epochs = 30, 600, 1
    run(
        args.weights,
        args.out,
        quick=args.quick,
        repeats=args.repeats,
        leak_train=args.leak_train,
        leak_epochs=args.leak_epochs,
    )


if __name__ == "__main__":
    main()
