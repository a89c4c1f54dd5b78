"""The two things a user brings, a multi-exit model and its data, and how the project
runs any such model split at a cut.

**Model**: a callable ``build() -> torch.nn.Module`` returning a trained model in eval
mode with

* ``blocks``: an ``nn.ModuleList`` of K >= 2 blocks; block k takes block k-1's output
  (block 1 takes the input);
* ``exits``: an ``nn.ModuleList`` of the same length K; ``exits[k]`` reads block k+1's
  output and returns class logits ``(N, n_classes)``; the last one is the final
  classifier. An entry may be ``None`` where the model has no early exit after that
  block (the last may not);
* ``input_shape``: the shape of one sample without the batch axis (``(C, H, W)``,
  ``(C, L)``, anything).

**Data**: a callable ``load() -> dict`` mapping ``"train"``, ``"val"`` and ``"test"`` to
``(inputs, labels)`` numpy arrays: inputs ``(N, *input_shape)``, ``uint8`` or
``float32``; labels integers in ``0..n_classes-1``. ``uint8`` inputs reach the model
as ``float32`` divided by 255; ``float32`` inputs as they are.

Both are named ``module:function`` (imported as Python imports it, so ``PYTHONPATH``
works) or ``path/to/file.py:function``. Everything is checked by running the model once
on a zero input; every error names the reference and what is wrong.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from settings.tables import InputError

SPLIT_NAMES = ("train", "val", "test")


class ContractError(InputError):
    """A model or data reference that cannot be loaded or breaks the contract."""


# -- references ---------------------------------------------------------------------
def load_callable(ref: str, what: str = "reference", base: Path | None = None) -> Callable:
    """The function a ``module:function`` or ``path/to/file.py:function`` reference
    names (a relative file path is taken from ``base``, else the working folder)."""
    if not isinstance(ref, str) or ":" not in ref:
        raise ContractError(f"{what} {ref!r}: expected 'module:function' or 'file.py:function'")
    target, _, name = ref.rpartition(":")
    if not target or not name.isidentifier():
        raise ContractError(f"{what} {ref!r}: expected 'module:function' or 'file.py:function'")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_absolute() and base is not None:
            path = base / path
        if not path.is_file():
            raise ContractError(f"{what} {ref!r}: {path} not found")
        module_name = (
            "splitctl_user_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        )
        module = sys.modules.get(module_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[module_name]
                raise ContractError(f"{what} {ref!r}: {path} fails to import "
                                    f"({type(exc).__name__}: {exc})") from exc  # fmt: skip
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:  # ImportError, or the module's own error on import
            raise ContractError(
                f"{what} {ref!r}: module {target!r} does not import ({type(exc).__name__}: {exc})"
            ) from exc
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ContractError(f"{what} {ref!r}: {target} has no function {name!r}")
    return fn


def resolve_reference(ref: str | None, base: Path) -> str | None:
    """A ``file.py:function`` reference with a relative path, made absolute from
    ``base`` (the folder of the file that names it); module references unchanged."""
    if ref is None:
        return None
    target, _, name = ref.rpartition(":")
    if target.endswith(".py") and not Path(target).is_absolute():
        return f"{(base / target).resolve()}:{name}"
    return ref


# -- running a model split at a cut --------------------------------------------------------
def to_model_input(inputs: np.ndarray) -> np.ndarray:
    """Data inputs as the model takes them: uint8 / 255 as float32, float32 as is."""
    if inputs.dtype == np.uint8:
        return inputs.astype(np.float32) / np.float32(255.0)
    return np.asarray(inputs, dtype=np.float32)


def head(model, cut: int, x):
    """Blocks ``1..cut`` (the device's part); ``cut = 0`` returns the input."""
    for block in model.blocks[:cut]:
        x = block(x)
    return x


def tail(model, cut: int, h):
    """Blocks ``cut+1..K`` and the final classifier (the cloud's part): logits."""
    for block in model.blocks[cut:]:
        h = block(h)
    return model.exits[-1](h)


def exit_logits(model, block: int, h):
    """Logits of the exit after ``block`` (1-based) from that block's output."""
    return model.exits[block - 1](h)


def forward_all(model, x) -> list:
    """Logits of every exit after every block (``None`` where there is no exit)."""
    out = []
    for block, exit_head in zip(model.blocks, model.exits, strict=True):
        x = block(x)
        out.append(None if exit_head is None else exit_head(x))
    return out


# -- what the project knows of a model ------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """A model's structure, found by running it once."""

    ref: str
    n_blocks: int
    input_shape: tuple[int, ...]
    n_classes: int
    has_exit: tuple[bool, ...]  # per block; the last is always True
    # The tensor at each cut 0..K: the input, then each block's output (what leaves the
    # device at cuts 0..K-1; block K's output stays on the device).
    activation_shapes: tuple[tuple[int, ...], ...]
    model_hash: str

    @property
    def n_cuts(self) -> int:
        return self.n_blocks + 1


def describe(model) -> dict:
    """What the model hash covers besides the weights: the built-in model's
    architecture (as before this contract existed, so its hash is unchanged), else the
    input shape and which blocks have exits. Not the class's name or module, so that
    the same weights hash the same however the code is imported."""
    arch = getattr(model, "arch", None)
    if arch is not None and hasattr(arch, "to_dict"):
        return arch.to_dict()
    return {"input_shape": [int(v) for v in model.input_shape],
            "has_exit": [e is not None for e in model.exits]}  # fmt: skip


def model_hash(model) -> str:
    """SHA-256 of the model's description and every parameter and buffer, in a fixed
    order; 16 hex digits."""
    digest = hashlib.sha256(repr(sorted(describe(model).items())).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def check_model(model: Any, ref: str = "model") -> ModelSpec:
    """Check a model against the contract; its ``ModelSpec``."""
    import torch
    from torch import nn

    if not isinstance(model, nn.Module):
        raise ContractError(f"model {ref!r}: build() returned {type(model).__name__}, "
                            "not a torch.nn.Module")  # fmt: skip
    for name in ("blocks", "exits"):
        if not isinstance(getattr(model, name, None), nn.ModuleList):
            raise ContractError(f"model {ref!r}: has no '{name}' (an nn.ModuleList)")
    k = len(model.blocks)
    if k < 2:
        raise ContractError(f"model {ref!r}: needs at least 2 blocks, has {k}")
    if len(model.exits) != k:
        raise ContractError(
            f"model {ref!r}: 'blocks' has {k} entries but 'exits' has {len(model.exits)}; "
            "give one exit per block (None where a block has none)"
        )
    if model.exits[-1] is None:
        raise ContractError(f"model {ref!r}: the last exit is the final classifier; it is None")
    shape = getattr(model, "input_shape", None)
    try:
        shape = tuple(int(v) for v in shape)
        if not shape or min(shape) < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise ContractError(
            f"model {ref!r}: 'input_shape' must be the shape of one sample, like (1, 28, 28); "
            f"got {shape!r}"
        ) from None
    if model.training:
        raise ContractError(f"model {ref!r}: build() must return the model in eval mode")
    shapes, n_classes = [shape], None
    try:
        with torch.inference_mode():
            h = torch.zeros(1, *shape)
            for b, (block, exit_head) in enumerate(zip(model.blocks, model.exits, strict=True), 1):
                h = block(h)
                shapes.append(tuple(h.shape[1:]))
                if exit_head is None:
                    continue
                logits = exit_head(h)
                if logits.ndim != 2 or logits.shape[0] != 1:
                    raise ContractError(
                        f"model {ref!r}: exit {b} returns shape {tuple(logits.shape)}, "
                        "expected logits (N, n_classes)"
                    )
                if n_classes is None:
                    n_classes = int(logits.shape[1])
                elif logits.shape[1] != n_classes:
                    raise ContractError(
                        f"model {ref!r}: exit {b} returns {logits.shape[1]} classes, "
                        f"an earlier exit {n_classes}"
                    )
    except ContractError:
        raise
    except Exception as exc:
        raise ContractError(f"model {ref!r}: a forward pass on a zero input of shape "
                            f"{shape} fails ({type(exc).__name__}: {exc})") from exc  # fmt: skip
    if n_classes < 2:
        raise ContractError(f"model {ref!r}: the exits return {n_classes} class; need >= 2")
    return ModelSpec(
        ref, k, shape, n_classes, tuple(e is not None for e in model.exits), tuple(shapes),
        model_hash(model),
    )  # fmt: skip


def build_model(ref: str, base: Path | None = None):
    """``(model, spec)`` from a ``module:function`` reference, checked."""
    model = _call(load_callable(ref, "model", base), f"model {ref!r}: build()")
    return model, check_model(model, ref)


def _call(fn: Callable, what: str):
    """A user's function called; what it raises becomes a ``ContractError`` naming it."""
    try:
        return fn()
    except ContractError:
        raise
    except Exception as exc:
        raise ContractError(f"{what} fails ({type(exc).__name__}: {exc})") from exc


# -- data ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Split:
    inputs: np.ndarray  # (N, *input_shape), uint8 or float32
    labels: np.ndarray  # (N,) int64

    @property
    def images(self) -> np.ndarray:  # the name the built-in Fashion-MNIST code used
        return self.inputs


def check_data(data: Any, spec: ModelSpec, ref: str = "data") -> dict[str, Split]:
    """Check ``load()``'s result against the contract and the model."""
    if not isinstance(data, dict):
        raise ContractError(f"data {ref!r}: load() returned {type(data).__name__}, not a dict")
    missing = [s for s in SPLIT_NAMES if s not in data]
    if missing:
        raise ContractError(f"data {ref!r}: split(s) {', '.join(missing)} missing; "
                            f"load() must return {', '.join(SPLIT_NAMES)}")  # fmt: skip
    out = {}
    for name in SPLIT_NAMES:
        try:
            inputs, labels = data[name]
        except (TypeError, ValueError):
            raise ContractError(f"data {ref!r}: split {name!r} is not (inputs, labels)") from None
        inputs, labels = np.asarray(inputs), np.asarray(labels)
        where = f"data {ref!r}: split {name!r}"
        if inputs.dtype not in (np.uint8, np.float32):
            raise ContractError(f"{where}: inputs are {inputs.dtype}, expected uint8 or float32")
        if inputs.shape[1:] != spec.input_shape:
            raise ContractError(
                f"{where}: inputs have shape {inputs.shape}, the model's input_shape "
                f"{spec.input_shape} means (N, {', '.join(map(str, spec.input_shape))})"
            )
        if len(inputs) == 0 or len(labels) != len(inputs) or labels.ndim != 1:
            raise ContractError(f"{where}: {len(inputs)} inputs and labels of shape "
                                f"{labels.shape}; need N >= 1 of each")  # fmt: skip
        if labels.dtype.kind not in "iu":
            raise ContractError(f"{where}: labels are {labels.dtype}, expected integers")
        if labels.min() < 0 or labels.max() >= spec.n_classes:
            raise ContractError(
                f"{where}: labels span {labels.min()}..{labels.max()}, the model has "
                f"{spec.n_classes} classes (0..{spec.n_classes - 1})"
            )
        if inputs.dtype == np.float32 and not np.isfinite(inputs).all():
            raise ContractError(f"{where}: inputs hold NaN or infinity")
        out[name] = Split(inputs, labels.astype(np.int64))
    return out


def load_data(ref: str, spec: ModelSpec, base: Path | None = None) -> dict[str, Split]:
    data = _call(load_callable(ref, "data", base), f"data {ref!r}: load()")
    return check_data(data, spec, ref)


# -- what crosses at cut 0 -------------------------------------------------------------------
def input_kind(spec: ModelSpec, dtype: np.dtype) -> str:
    """``"image"`` when the inputs are uint8 images with 1 or 3 channels (the image
    codecs and the leakage attack apply at cut 0), else ``"tensor"`` (cut 0 sends the
    model's input through the tensor codecs)."""
    s = spec.input_shape
    if np.dtype(dtype) == np.uint8 and len(s) == 3 and s[0] in (1, 3) and min(s[1:]) >= 8:
        return "image"
    return "tensor"


# -- a model and its data for a profile ------------------------------------------------------
def model_for_profile(profile, ref: str | None = None):
    """``(model, spec)`` of the model a profile was measured on (``ref``: another
    reference to the same model, such as a scenario's); refused when its hash is not
    the profile's."""
    ref = ref or profile.model_ref
    if ref is None:
        raise ContractError(f"{profile.path}: names no model; give the scenario a 'model'")
    model, spec = build_model(ref)
    profile.check_model_hash(spec.model_hash, f"model {ref}")
    return model, spec


def data_for_profile(profile, spec: ModelSpec, ref: str | None = None) -> dict[str, Split]:
    ref = ref or profile.data_ref
    if ref is None:
        raise ContractError(f"{profile.path}: names no data; give the scenario a 'data'")
    return load_data(ref, spec)
