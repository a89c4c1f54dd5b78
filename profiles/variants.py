"""Compressed versions of the device's blocks: the model variants a controller may run.

A variant replaces the blocks the device runs (``1..cut``); the cloud's tail stays the
float32 model, so a request under variant ``v`` at cut ``c`` is ``tail(c, v.head(c, x))``.
Two variants, both real (their time is measured on this CPU, their accuracy on every
sample):

* ``int8``: post-training static quantisation (PyTorch FX graph mode, x86 backend):
  each block's convolution, batch norm and ReLU fused and run in int8, weights per
  channel, activations per tensor, calibrated on training images. Each block is
  converted alone, so its time includes quantising its input and dequantising its
  output (an upper bound on a chain kept in int8).
* ``pruned50``: channel pruning (He, Zhang and Sun, ICCV 2017): every block after the
  first reads half of its input channels (those its weights use most), its kept
  weights refitted by least squares to reproduce the float block's output. Every block
  still writes all its channels, so the activation at any cut has the shape the
  cloud's tail expects; the device does half the multiply-adds from block 2 on.

Both need blocks of the built-in CNN's form (``Conv2d`` without bias, ``BatchNorm2d``,
``ReLU``, optionally ``MaxPool2d``); another model is refused with the block at fault.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from settings.tables import InputError

VARIANTS = ("int8", "pruned50")  # what ``build_variant`` makes, besides the base
PRUNE_KEEP = 0.5


class VariantError(InputError):
    """A model whose blocks a variant cannot be made of."""


def _parts(block: nn.Module, b: int) -> tuple[nn.Conv2d, nn.BatchNorm2d, nn.Module | None]:
    """The convolution, batch norm and pooling of block ``b`` (1-based), checked."""
    layers = list(block.children()) if isinstance(block, nn.Sequential) else []
    kinds = [type(m) for m in layers]
    if (
        kinds[:3] != [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
        or len(layers) > 4
        or (len(layers) == 4 and not isinstance(layers[3], nn.MaxPool2d))
    ):
        raise VariantError(
            f"block {b}: model variants need blocks of Conv2d, BatchNorm2d, ReLU and an "
            f"optional MaxPool2d (the built-in CNN's); found {[k.__name__ for k in kinds]}"
        )
    conv, bn = layers[0], layers[1]
    if conv.bias is not None or conv.groups != 1:
        raise VariantError(f"block {b}: the convolution must have no bias and one group")
    return conv, bn, layers[3] if len(layers) == 4 else None


def block_inputs(model, x: torch.Tensor) -> list[torch.Tensor]:
    """The input of every block of the float model (block 1's is ``x``)."""
    out = [x]
    with torch.inference_mode():
        for block in model.blocks[:-1]:
            out.append(block(out[-1]))
    return out


# -- int8 -----------------------------------------------------------------------------------
def int8_blocks(model, calibration: torch.Tensor) -> list[nn.Module]:
    """Every block quantised to int8 (FX graph mode, x86), calibrated on the float
    model's activations of ``calibration`` inputs."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    mapping = get_default_qconfig_mapping("x86")
    out = []
    for b, (block, x) in enumerate(
        zip(model.blocks, block_inputs(model, calibration), strict=True), 1
    ):
        _parts(block, b)
        with warnings.catch_warnings():
            # torch.ao.quantization is deprecated in favour of torchao, which the pinned
            # torch does not ship; its API still works and is what is measured here.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module="torch")
            prepared = prepare_fx(copy.deepcopy(block).eval(), mapping, example_inputs=(x[:1],))
            with torch.inference_mode():
                prepared(x)
            out.append(convert_fx(prepared).eval())
    return out


# -- pruned ---------------------------------------------------------------------------------
class PrunedBlock(nn.Module):
    """A block whose convolution reads only ``keep_in`` of its input channels, its
    weights refitted so that its output (every channel, the float block's shape)
    matches the float block's."""

    def __init__(
        self,
        conv: nn.Conv2d,
        bn: nn.BatchNorm2d,
        pool: nn.Module | None,
        keep_in: torch.Tensor,
        weight: torch.Tensor,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            len(keep_in), conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False
        )
        self.conv.weight.data = weight.clone()
        self.bn = copy.deepcopy(bn)
        self.pool = copy.deepcopy(pool) if pool is not None else nn.Identity()
        self.register_buffer("keep_in", keep_in.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.bn(self.conv(x.index_select(1, self.keep_in)))))


def pruned_blocks(
    model,
    train_x: torch.Tensor,
    keep: float = PRUNE_KEEP,
    positions: int = 40_000,
    seed: int = 0,
) -> list[nn.Module]:
    """Every block after the first reading ``keep`` of its input channels: channel
    pruning with least-squares reconstruction (He, Zhang and Sun, ICCV 2017). The
    channels kept are those whose weights weigh most (L1 over outputs and kernel);
    the kept weights are refitted by least squares so that the convolution's output on
    the pruned chain's inputs matches the float one's on the float inputs (at
    ``positions`` random output positions). Block 1 reads the image and is kept."""
    parts = [_parts(block, b) for b, block in enumerate(model.blocks, 1)]
    generator = torch.Generator().manual_seed(seed)
    float_in = block_inputs(model, train_x)
    blocks: list[nn.Module] = [copy.deepcopy(model.blocks[0]).eval()]
    with torch.inference_mode():
        pruned_in = blocks[0](train_x)
    for (conv, bn, pool), x_float in zip(parts[1:], float_in[1:], strict=True):
        w = conv.weight.detach()
        n_keep = max(1, round(conv.in_channels * keep))
        # What an input channel contributes: its weights' size times its typical size.
        importance = w.abs().sum(dim=(0, 2, 3)) * pruned_in.abs().mean(dim=(0, 2, 3))
        keep_in = torch.sort(torch.argsort(importance, descending=True)[:n_keep]).values
        weight = _refit(conv, w, keep_in, pruned_in, x_float, positions, generator)
        block = PrunedBlock(conv, bn, pool, keep_in, weight).eval()
        blocks.append(block)
        with torch.inference_mode():
            pruned_in = block(pruned_in)
    return blocks


def _refit(conv, w, keep_in, pruned_in, x_float, positions: int, generator) -> torch.Tensor:
    """Least-squares weights over the kept input channels: the output at random
    positions computed from the pruned chain's input, against the float one's."""
    unfold = nn.Unfold(conv.kernel_size, padding=conv.padding, stride=conv.stride)
    with torch.inference_mode():
        target_cols = unfold(x_float)  # (N, C_in*k*k, L)
        kept_cols = unfold(pruned_in.index_select(1, keep_in))
        n, _, length = target_cols.shape
        pick = torch.randint(0, n * length, (positions,), generator=generator)
        a = kept_cols.permute(0, 2, 1).reshape(n * length, -1)[pick].double()
        target = target_cols.permute(0, 2, 1).reshape(n * length, -1)[pick].double()
        y = target @ w.reshape(w.shape[0], -1).double().T  # (positions, C_out)
        solution = torch.linalg.lstsq(a, y).solution  # (kept*k*k, C_out)
    k_h, k_w = conv.kernel_size
    return solution.T.reshape(w.shape[0], len(keep_in), k_h, k_w).float()


# -- what a variant weighs --------------------------------------------------------------------
def block_bytes(block: nn.Module) -> int:
    """Bytes of a block's weights as a device stores them: float32 parameters (batch
    norm folded into a per-channel scale and bias); int8 weights with a float32 scale,
    an int32 zero point and a float32 bias per output channel."""
    quantised = [m for m in block.modules() if hasattr(m, "weight") and callable(m.weight)]
    if quantised:  # a converted int8 module: weight() returns the quantised tensor
        total = 0
        for m in quantised:
            w = m.weight()
            total += w.numel() + w.shape[0] * (4 + 4 + 4)
        return total
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return sum(c.weight.numel() * 4 + c.out_channels * 2 * 4 for c in convs)


def build_variant(name: str, model, train_x: torch.Tensor, progress=None) -> list[nn.Module]:
    """The device blocks of variant ``name`` (``VARIANTS``) of ``model``."""
    if name == "int8":
        return int8_blocks(model, train_x[:1024])
    if name == "pruned50":
        return pruned_blocks(model, train_x[:4096])
    raise VariantError(f"unknown model variant {name!r}; known: {', '.join(VARIANTS)}")


class VariantModel(nn.Module):
    """The model a request runs under a variant at ``cut``: the variant's blocks
    ``1..cut`` on the device, the float blocks after it in the cloud, the float exits
    (the device's exits read the variant's activations)."""

    def __init__(self, model, variant_blocks: list[nn.Module], cut: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(list(variant_blocks[:cut]) + list(model.blocks[cut:]))
        self.exits = model.exits
        self.input_shape = model.input_shape
