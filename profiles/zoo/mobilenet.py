"""A MobileNetV2-style multi-exit network for Fashion-MNIST: the worked example of the
model contract (``profiles.multiexit``), and the kind of network edge devices run.

    python -m profiles.zoo.mobilenet [--epochs 6] [--seed 0]   # reproduce the weights

Eight blocks of inverted residuals (Sandler et al., "MobileNetV2: Inverted Residuals and
Linear Bottlenecks", CVPR 2018): a 1x1 expansion, a 3x3 depthwise convolution, a linear
1x1 projection, with a residual connection where shapes allow; batch norm and ReLU6.
Block 1 starts with a 3x3 stem of stride 2, as MobileNetV2's (28x28 -> 14x14). Early
exits (global average pool + one linear layer) after blocks 2, 3, 5 and 7; the final
classifier after block 8 (a 1x1 convolution to 192 channels, global average pool,
linear). Blocks 1, 4 and 6 have no exit: the contract's ``None``.

``build()`` returns the shipped, trained model; ``profiles.dataset:load`` is its data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

from settings.cli import summary_of

WEIGHTS = Path(__file__).resolve().parents[1] / "data" / "mobilenet_fmnist.pt"
FORMAT = "splitctl-state-v1"
# (expansion, output channels, stride) of each inverted residual; block 1 also has the stem.
BLOCKS = ((1, 16, 1), (4, 24, 2), (4, 24, 1), (4, 32, 2), (4, 32, 1), (4, 48, 1), (4, 64, 1),
          (4, 96, 1))  # fmt: skip
EXITS_AFTER = (2, 3, 5, 7)  # 1-based blocks with an early exit; block 8 has the final one
STEM_CHANNELS = 16
HEAD_CHANNELS = 192
N_CLASSES = 10


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1,
            act: bool = True) -> nn.Sequential:  # fmt: skip
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        layers = [] if expansion == 1 else [conv_bn(c_in, hidden, 1)]
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden),
                   conv_bn(hidden, c_out, 1, act=False)]  # fmt: skip
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class MultiExitMobileNet(nn.Module):
    input_shape = (1, 28, 28)

    def __init__(self) -> None:
        super().__init__()
        blocks, exits, c_in = [], [], STEM_CHANNELS
        for b, (t, c, s) in enumerate(BLOCKS, start=1):
            layers: list[nn.Module] = [conv_bn(1, STEM_CHANNELS, 3, 2)] if b == 1 else []
            layers.append(InvertedResidual(c_in, c, s, t))
            if b == len(BLOCKS):
                layers.append(conv_bn(c, HEAD_CHANNELS, 1))
            blocks.append(nn.Sequential(*layers))
            width = HEAD_CHANNELS if b == len(BLOCKS) else c
            has_exit = b in EXITS_AFTER or b == len(BLOCKS)
            exits.append(
                nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, N_CLASSES))
                if has_exit else None
            )  # fmt: skip
            c_in = c
        self.blocks = nn.ModuleList(blocks)
        self.exits = nn.ModuleList(exits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.exits[-1](x)


def build() -> MultiExitMobileNet:
    """The shipped, trained model in eval mode (the contract's ``build``)."""
    from profiles.model import WeightsError

    try:
        payload = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{WEIGHTS}: weights file not found; train them with "
                           "python -m profiles.zoo.mobilenet") from None  # fmt: skip
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise WeightsError(f"{WEIGHTS}: field 'format' is not {FORMAT!r}")
    model = MultiExitMobileNet()
    model.load_state_dict(payload["state_dict"])
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    from profiles.dataset import load_splits
    from profiles.multiexit import model_hash
    from profiles.train_model import console, fit, training_record

    parser = argparse.ArgumentParser(description=summary_of(__doc__))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    splits = load_splits()
    model = MultiExitMobileNet()
    seconds = fit(model, splits, args.epochs, args.seed, lr=args.lr)
    meta = training_record(model, splits, args.epochs, args.seed, seconds)
    test = meta["test_exit_accuracy"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "state_dict": model.state_dict(), "meta": meta}, args.out)
    console.print(f"saved {args.out} (hash {model_hash(model)}) in {seconds:.0f} s; test exits "
                  + " ".join(f"{a:.4f}" for a in test))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
