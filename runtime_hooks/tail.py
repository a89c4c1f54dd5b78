"""The cloud's compute: a multi-exit model's tail from any cut, on a batch.

``TailRunner`` is what every serving backend runs, in-process (``runtime_hooks.server``)
or in a Ray Serve replica (``runtime_hooks.ray_serve``): the tail from a cut
(``profiles.multiexit.tail``), or a learned bottleneck's decoder and fine-tuned tail,
optionally padded to the time the scenario's cloud takes for a batch of that size
(``--emulate-cloud``). ``load_runner`` builds it from a scenario, checking the model
against the profile's hash, so every replica of a deployment runs the same model as
the gateway that validated the request.
"""

from __future__ import annotations

import time

import numpy as np

from profiles.multiexit import tail
from settings.tables import InputError


class TailRunner:
    """The tail of ``model`` (and the ``bottlenecks`` by ``(cut, level)``) on ``device``.
    ``batch_seconds[cut, size]``: pad each batch to that many seconds (cloud
    emulation)."""

    def __init__(self, model, profile, bottlenecks: dict | None = None, device: str = "cpu",
                 batch_seconds: np.ndarray | None = None) -> None:  # fmt: skip
        import torch

        self.torch = torch
        self.model = model.to(device).eval()
        self.profile = profile
        self.device = device
        if bottlenecks is None and profile.bottlenecks:
            from profiles.bottleneck import load_for_profile
            from profiles.multiexit import check_model

            bottlenecks = load_for_profile(profile, model, check_model(model))
        self.bottlenecks = {key: b.to(device).eval() for key, b in (bottlenecks or {}).items()}
        self.batch_seconds = None if batch_seconds is None else np.asarray(batch_seconds)

    def run(self, route, batch: np.ndarray) -> tuple[np.ndarray, float]:
        """Logits of a batch at ``route`` (a cut, or ``(cut, level)`` of a bottleneck)
        and the seconds it took (padded under cloud emulation)."""
        torch = self.torch
        t0 = time.perf_counter()
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            if isinstance(route, tuple):
                logits = self.bottlenecks[route].decode(x)
            else:
                logits = tail(self.model, route, x)
            logits = logits.float().cpu().numpy()
        if self.batch_seconds is not None:
            cut = route[0] if isinstance(route, tuple) else route
            size = min(len(batch), self.batch_seconds.shape[1] - 1)
            left = float(self.batch_seconds[cut, size]) - (time.perf_counter() - t0)
            if left > 0:
                time.sleep(left)
        return logits, time.perf_counter() - t0

    def warm_up(self) -> None:
        """Run every route once: the first inference of a process pays for lazy
        initialisation (tens of ms), which no device request should see."""
        for cut, shape in enumerate(self.profile.activation_shapes[: self.profile.n_blocks]):
            self.run(cut, np.zeros((1, *shape), np.float32))
        for route, bottleneck in self.bottlenecks.items():
            self.run(route, np.zeros((1, *bottleneck.latent_shape), np.float32))


def load_runner(scenario=None, device: str = "cpu", weights=None, threads: int = 1,
                emulate_cloud: bool = False, max_batch: int = 32) -> TailRunner:  # fmt: skip
    """The runner of a scenario (path, ``Scenario`` or ``None``: the built-in one): its
    model, checked against its profile. ``weights``: the built-in CNN with these
    weights instead (checked the same way)."""
    import torch

    from profiles.multiexit import model_for_profile, model_hash
    from profiles.profile_io import load_profile
    from sim.scenario import Scenario, load_scenario

    torch.set_num_threads(threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine")
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    scenario.check_references()  # its model, data and profile together, naming the file
    batch_seconds = None
    if emulate_cloud:
        from sim.cloud import batch_seconds as cloud_batch_seconds
        from sim.system import System

        batch_seconds = cloud_batch_seconds(System(scenario), scenario.capacity, max_batch)
    profile = load_profile(scenario.profile)
    if weights is not None:
        from profiles.model import load_model

        model = load_model(weights)
        profile.check_model_hash(model_hash(model), f"model in --weights {weights}")
    else:
        model, _ = model_for_profile(profile, scenario.model)
    return TailRunner(model, profile, device=device, batch_seconds=batch_seconds)
