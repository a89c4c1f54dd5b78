"""The policy as ONNX: the raw observation in, the action's three indices out.

``write_onnx_policy(policy, path)`` builds the graph from a policy file
(``runtime_hooks.policy_file.NumpyPolicy``) with ``onnx.helper``, no torch: the
observation normalisation folded in (in double, as VecNormalize computes it), the tanh
network in float32, the arg-max of the flat head, and the table that turns it into
``(cut, threshold, level)``. Inputs ``observation`` (float32, ``[batch, 17]``); output
``action`` (int64, ``[batch, 3]``). onnxruntime runs it on a Linux board.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime_hooks.policy_file import NumpyPolicy

OPSET = 17


def onnx_model(policy: NumpyPolicy):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def constant(name: str, array: np.ndarray):
        return numpy_helper.from_array(np.ascontiguousarray(array), name)

    inits = [
        constant("obs_mean", policy.obs_mean.astype(np.float64)),
        constant("obs_std", policy.obs_std.astype(np.float64)),
        constant("clip_low", np.array(-policy.clip, dtype=np.float64)),
        constant("clip_high", np.array(policy.clip, dtype=np.float64)),
        constant("table", policy.table.astype(np.int64)),
    ]
    nodes = [
        helper.make_node("Cast", ["observation"], ["obs64"], to=TensorProto.DOUBLE),
        helper.make_node("Sub", ["obs64", "obs_mean"], ["centred"]),
        helper.make_node("Div", ["centred", "obs_std"], ["scaled"]),
        helper.make_node("Clip", ["scaled", "clip_low", "clip_high"], ["clipped"]),
        helper.make_node("Cast", ["clipped"], ["h0"], to=TensorProto.FLOAT),
    ]
    layers = [*policy.layers, policy.head]
    activation = {"tanh": "Tanh", "relu": "Relu"}[policy.meta.activation]
    for i, (w, b) in enumerate(layers):
        inits += [
            constant(f"w{i}", w.T.astype(np.float32)),
            constant(f"b{i}", b.astype(np.float32)),
        ]
        nodes.append(helper.make_node("MatMul", [f"h{i}", f"w{i}"], [f"z{i}"]))
        last = i == len(layers) - 1
        out = "logits" if last else f"a{i}"
        nodes.append(helper.make_node("Add", [f"z{i}", f"b{i}"], [out]))
        if not last:
            nodes.append(helper.make_node(activation, [out], [f"h{i + 1}"]))
    nodes += [
        helper.make_node("ArgMax", ["logits"], ["choice"], axis=1, keepdims=0),
        helper.make_node("Gather", ["table", "choice"], ["action"], axis=0),
    ]
    graph = helper.make_graph(
        nodes,
        "splitctl_policy",
        [
            helper.make_tensor_value_info(
                "observation", TensorProto.FLOAT, ["batch", policy.meta.obs_dim]
            )
        ],
        [helper.make_tensor_value_info("action", TensorProto.INT64, ["batch", 3])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="splitctl"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_onnx_policy(policy: NumpyPolicy, path: str | Path) -> Path:
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(onnx_model(policy), str(path))
    return path


class OnnxPolicy:
    """``act(observation) -> action`` with onnxruntime alone (the common policy
    interface), from a ``policy.onnx``."""

    name = "ppo"

    def __init__(self, path: str | Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def act_all(self, observations: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(observations, dtype=np.float32)
        return self.session.run(["action"], {"observation": x})[0]

    def act(self, observation: np.ndarray) -> np.ndarray:
        return self.act_all(np.asarray(observation, dtype=np.float32)[None])[0]
