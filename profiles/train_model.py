"""Train the multi-exit CNN on Fashion-MNIST (seeded) and save the shipped weights.

    python -m profiles.train_model [--epochs 6] [--out profiles/data/multiexit_fmnist.pt]

Every exit is trained jointly (sum of the exits' cross-entropies, as in BranchyNet,
Teerapittayanon et al., ICPR 2016) with AdamW and a one-cycle schedule.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from torch import nn

from profiles import DEFAULT_WEIGHTS
from profiles.dataset import load_splits, to_tensor_input
from profiles.model import MultiExitCNN, model_hash, save_weights
from settings.cli import summary_of

console = Console()


def exit_accuracies(model, images: np.ndarray, labels: np.ndarray) -> list[float]:
    """Accuracy of every exit (blocks without an exit are left out)."""
    from profiles.multiexit import forward_all

    model.eval()
    correct: list[float] | None = None
    x_all = torch.from_numpy(to_tensor_input(images))
    with torch.no_grad():
        for start in range(0, len(labels), 1000):
            outs = [o for o in forward_all(model, x_all[start : start + 1000]) if o is not None]
            y = torch.from_numpy(labels[start : start + 1000])
            hits = [(logits.argmax(1) == y).sum().item() for logits in outs]
            correct = (
                hits if correct is None else [a + b for a, b in zip(correct, hits, strict=True)]
            )
    return [c / len(labels) for c in correct]


def fit(model, splits, epochs: int, seed: int, batch_size: int = 128, lr: float = 4e-3,
        weight_decay: float = 5e-4) -> float:  # fmt: skip
    """Train every exit of a multi-exit model jointly (the sum of the exits'
    cross-entropies, BranchyNet-style) with AdamW and a one-cycle schedule, random
    horizontal flips (garments are left/right symmetric); seconds it took. Works for any
    model of the ``profiles.multiexit`` contract on Fashion-MNIST-shaped images."""
    from profiles.multiexit import forward_all

    torch.manual_seed(seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    x = torch.from_numpy(to_tensor_input(splits["train"].images))
    y = torch.from_numpy(splits["train"].labels)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = (len(y) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    with Progress(console=console) as progress:
        task = progress.add_task("training", total=epochs * steps_per_epoch)
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(y), generator=gen)
            for start in range(0, len(y), batch_size):
                idx = order[start : start + batch_size]
                xb = x[idx]
                flip = torch.rand(len(idx), generator=gen) < 0.5
                xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
                outs = [o for o in forward_all(model, xb) if o is not None]
                loss = sum(loss_fn(out, y[idx]) for out in outs)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                progress.advance(task)
            val = exit_accuracies(model, splits["val"].images, splits["val"].labels)
            progress.console.print(
                f"epoch {epoch + 1}/{epochs}  val exits " + " ".join(f"{a:.3f}" for a in val)
            )
    model.eval()
    return time.perf_counter() - t0


def train(epochs: int, seed: int, batch_size: int = 128, lr: float = 4e-3) -> tuple:
    torch.manual_seed(seed)
    splits = load_splits()
    model = MultiExitCNN()
    seconds = fit(model, splits, epochs, seed, batch_size, lr)
    return model, splits, seconds


def training_record(model, splits, epochs: int, seed: int, seconds: float) -> dict:
    """What a weights file keeps of its training: data, settings, time, accuracies."""
    return {
        "dataset": "Fashion-MNIST (Xiao et al., 2017), Debian dataset-fashion-mnist",
        "epochs": epochs,
        "seed": seed,
        "train_seconds": round(seconds, 1),
        "val_exit_accuracy": [round(a, 4) for a in exit_accuracies(
            model, splits["val"].images, splits["val"].labels)],
        "test_exit_accuracy": [round(a, 4) for a in exit_accuracies(
            model, splits["test"].images, splits["test"].labels)],
        "n_parameters": sum(p.numel() for p in model.parameters()),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=summary_of(__doc__))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    args = parser.parse_args(argv)
    model, splits, seconds = train(args.epochs, args.seed)
    meta = training_record(model, splits, args.epochs, args.seed, seconds)
    test = meta["test_exit_accuracy"]
    save_weights(model, args.out, meta)
    console.print(f"saved {args.out} (hash {model_hash(model)}) in {seconds:.0f} s")
    console.print("test exit accuracy: " + " ".join(f"{a:.4f}" for a in test))


if __name__ == "__main__":
    main()
