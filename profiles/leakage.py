"""Privacy leakage of what crosses the uplink, measured by model inversion.

For each cut an attacker who sees the transmitted tensor trains a small decoder that
reconstructs the input image (He, Zhang, Lee, "Model inversion attacks against
collaborative inference", ACSAC 2019, the learning-based attack). Leakage is the
SSIM (Wang et al., IEEE TIP 2004) between the original test image and the
reconstruction from the *decoded* tensor, in [0, 1]: 1 means the image is handed
over intact. At cut 0 the attacker holds the decoded image itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from settings.cli import at_least, option


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Mean SSIM per image of two batches (N, C, H, W) in [0, 1], uniform window (the
    mean over channels for colour images)."""
    c1, c2 = 0.01**2, 0.03**2
    pad = window // 2

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, window, stride=1, padding=pad, count_include_pad=False)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return s.mean(dim=(1, 2, 3))


class InversionDecoder(nn.Module):
    """What the attacker trains: a received tensor -> the input image ``(C, H, W)``.
    A spatial tensor ``(C', H', W')`` goes through 3x3 convolutions, upsampled by 2 until
    the image's size (then resized exactly); any other shape through a small MLP."""

    def __init__(self, received_shape: tuple[int, ...], image_shape: tuple[int, int, int]):
        super().__init__()
        channels, height, width = image_shape
        if len(received_shape) == 3:
            c, h, w = received_shape
            layers: list[nn.Module] = [nn.Conv2d(c, 32, 3, padding=1), nn.ReLU()]
            while min(h, w) < min(height, width):
                layers += [nn.Upsample(scale_factor=2), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU()]
                h, w = 2 * h, 2 * w
            if (h, w) != (height, width):
                layers.append(nn.Upsample(size=(height, width)))
            layers += [nn.Conv2d(32, channels, 3, padding=1), nn.Sigmoid()]
        else:
            n_in = int(np.prod(received_shape))
            layers = [nn.Flatten(), nn.Linear(n_in, 256), nn.ReLU(),
                      nn.Linear(256, channels * height * width), nn.Sigmoid(),
                      nn.Unflatten(1, (channels, height, width))]  # fmt: skip
        self.net = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


def train_inversion(
    activations: torch.Tensor, images: torch.Tensor, *, epochs: int, seed: int
) -> InversionDecoder:
    """Fit a decoder on (activation, image) pairs of the train split."""
    torch.manual_seed(seed)
    decoder = InversionDecoder(tuple(activations.shape[1:]), tuple(images.shape[1:]))
    opt = torch.optim.Adam(decoder.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=gen)
        for start in range(0, len(images), 128):
            idx = order[start : start + 128]
            loss = F.mse_loss(decoder(activations[idx]), images[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    decoder.eval()
    return decoder


def reconstruction_ssim(
    decoder: InversionDecoder | None, received: np.ndarray, images: np.ndarray
) -> float:
    """Mean SSIM of the decoder's reconstructions (or of ``received`` itself at cut 0)."""
    target = torch.from_numpy(images)
    with torch.inference_mode():
        x = torch.from_numpy(received)
        recon = x if decoder is None else decoder(x)
        return float(ssim(recon.clamp(0, 1), target).mean().clamp(0, 1))


def applicability(input_shape: tuple[int, ...], low: float, high: float) -> str | None:
    """Why the attack cannot score inputs of this shape and value range, or ``None``
    when it can: SSIM compares images ``(C, H, W)`` with values in [0, 1], at least as
    large as its 7x7 window."""
    if len(input_shape) != 3 or min(input_shape[1:]) < 7:
        return (
            f"the inputs are not images (shape {tuple(input_shape)}, not (C, H, W) with H, W "
            ">= 7): SSIM, the leakage measure, compares images"
        )
    if low < 0.0 or high > 1.0:
        return (
            f"the model's inputs span [{low:.3g}, {high:.3g}], not [0, 1]: SSIM's constants "
            "assume pixel values in [0, 1]"
        )
    return None


@dataclass
class AttackOptions:
    """The inversion attack's budget: command-line options shared by every command that
    measures leakage (``profiles.profile``, ``bottleneck_profile``, ``noise_profile``)."""

    leak_train: int = option(10000, "training samples of the inversion attack", check=at_least(1))
    leak_epochs: int = option(3, "epochs of the inversion attack", check=at_least(1))
