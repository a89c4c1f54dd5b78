"""The device's part of the model: its blocks, its early exits and the learned
bottlenecks' encoders, in torch (``TorchHead``) or in ONNX files run by onnxruntime
(``OnnxHead``, no torch: what a device bundle carries).

Both take and give numpy arrays, one input at a time (batch 1): ``block(b, h)`` runs
block ``b`` on the tensor after block ``b - 1``, ``exit(b, h)`` gives the confidence and
prediction of the exit after block ``b``, ``latent(cut, level, h)`` the encoder of the
bottleneck at ``(cut, level)``. ``export_head`` writes a model's ONNX files, one per
block, exit and encoder, and ``OnnxHead`` reads them back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OPSET = 17


def _softmax_max(logits: np.ndarray) -> tuple[float, int]:
    z = logits.astype(np.float64).ravel()
    p = np.exp(z - z.max())
    p /= p.sum()
    i = int(p.argmax())
    return float(p[i]), i


class TorchHead:
    """The model's device part in torch (the device loop's default)."""

    def __init__(self, model, bottlenecks: dict) -> None:
        import torch

        self.torch, self.model, self.bottlenecks = torch, model.eval(), bottlenecks

    def block(self, b: int, h: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model.blocks[b - 1](self.torch.from_numpy(h)).numpy()

    def exit(self, b: int, h: np.ndarray) -> tuple[float, int]:
        with self.torch.inference_mode():
            probs = self.torch.softmax(self.model.exits[b - 1](self.torch.from_numpy(h)), dim=1)[0]
        conf, pred = probs.max(0)
        return float(conf), int(pred)

    def latent(self, cut: int, level: int, h: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.bottlenecks[(cut, level)].encode(self.torch.from_numpy(h)).numpy()


class OnnxHead:
    """The model's device part from ``export_head``'s files, run by onnxruntime."""

    def __init__(self, folder: str | Path, n_blocks: int, has_exit, bottlenecks: dict) -> None:
        """``bottlenecks``: ``(cut, level) -> file name`` of each encoder."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        folder = Path(folder)

        def session(name: str):
            return ort.InferenceSession(
                str(folder / name), options, providers=["CPUExecutionProvider"]
            )

        self.blocks = [session(f"block{b}.onnx") for b in range(1, n_blocks + 1)]
        self.exits = [
            session(f"exit{b}.onnx") if has_exit[b - 1] else None for b in range(1, n_blocks + 1)
        ]
        self.encoders = {key: session(name) for key, name in bottlenecks.items()}

    @staticmethod
    def _run(sess, h: np.ndarray) -> np.ndarray:
        return sess.run(None, {"x": np.ascontiguousarray(h, dtype=np.float32)})[0]

    def block(self, b: int, h: np.ndarray) -> np.ndarray:
        return self._run(self.blocks[b - 1], h)

    def exit(self, b: int, h: np.ndarray) -> tuple[float, int]:
        return _softmax_max(self._run(self.exits[b - 1], h))

    def latent(self, cut: int, level: int, h: np.ndarray) -> np.ndarray:
        return self._run(self.encoders[(cut, level)], h)


def export_head(model, spec, bottlenecks: dict, folder: str | Path) -> dict[str, str]:
    """Write ``block{b}.onnx``, ``exit{b}.onnx`` (where block ``b`` has an exit) and
    ``encoder_cut{c}_level{l}.onnx`` into ``folder``; returns ``{file: what it is}``."""
    import warnings

    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    written = {}

    def save(module, shape, name: str, what: str) -> None:
        x = torch.zeros(1, *shape)
        with warnings.catch_warnings():  # the TorchScript exporter says it is the old one
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (x,),
                str(folder / name),
                input_names=["x"],
                output_names=["y"],
                opset_version=OPSET,
                dynamo=False,
            )
        written[name] = what

    shapes = spec.activation_shapes
    for b in range(1, spec.n_blocks + 1):
        save(model.blocks[b - 1], shapes[b - 1], f"block{b}.onnx", f"block {b}")
        if spec.has_exit[b - 1]:
            save(model.exits[b - 1], shapes[b], f"exit{b}.onnx", f"the exit after block {b}")
    for (cut, level), bottleneck in sorted(bottlenecks.items()):
        name = f"encoder_cut{cut}_level{level}.onnx"
        save(bottleneck.encoder, shapes[cut], name, f"the encoder of cut {cut}, level {level}")
    return written
