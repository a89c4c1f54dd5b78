"""The on-device inference loop: real images, the real model's head, a real socket.

For each request the controller picks ``(cut, threshold, level)``; the device runs
blocks ``1..cut`` of the real model, checking each early exit against the threshold;
if one fires (or the whole model ran) the device answers. Otherwise the codec encodes
the tensor, a frame goes to the cloud server and the server's answer comes back.

Faults: when the server is down, slow, or the connection drops mid-frame, the device
falls back to a local answer in time for the deadline: the rest of the model when it
fits, else the exit at the cut (block 1's exit at cut 0). It reconnects later with
backoff. Every request gets exactly one answer; an answer that arrives after its
request fell back is discarded (counted as ``stale_answers``).

Device speed: by default the loop runs at the speed of the scenario's device (a
micro-controller in the default scenario is ~600x slower than this host): each piece
of device compute is measured, then padded with sleep to the time the simulator
charges for it (``sim.physics``). ``emulate_device=False`` runs at the host's own
speed instead. Energy per request is an estimate from the scenario's power models
(compute, radio transmit and tail, idle), as in the simulator.

Python API::

    loop = DeviceLoop.create(server=("127.0.0.1", 9300))
    result = loop.infer(image_uint8_28x28)      # a RequestResult
    loop.close()

The command line is ``runtime_hooks.device``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import IO

import numpy as np

from profiles.multiexit import to_model_input
from runtime_hooks import protocol as P
from runtime_hooks.cloud_link import ServerError
from runtime_hooks.controller import BatteryMonitor, Controller, psutil_battery
from runtime_hooks.device_records import Answer, Offloaded, RequestResult
from sim import physics

DEFAULT_POLICY = Path(__file__).resolve().parents[1] / "runs" / "default" / "policy.npz"


def policy_choice(text: str) -> str:
    """``--policy``: a policy file, or the name of one of the literature's heuristics
    (``agents.heuristics``: numpy rules on the profile, no Gymnasium or torch)."""
    from agents.heuristics import HEURISTICS

    if text in HEURISTICS or Path(text).is_file():
        return text
    raise ValueError(
        f"{text}: neither a policy file (runtime_hooks.export) nor a heuristic "
        f"({', '.join(HEURISTICS)}); leave --policy out for the shipped policy"
    )


def device_policy(policy, system, radio=None):
    """``policy`` as a device runs it: a heuristic's name (``agents.heuristics``) is
    built for the system and the device's ``radio`` (a catalog ``Radio``; default: the
    scenario's); a policy file's path (``None``: the shipped one) is loaded; a policy
    file is checked against the system (action grid, thresholds, observation, model).
    Any other object with ``act`` is taken as it is."""
    from agents.heuristics import HEURISTICS, make_heuristic
    from runtime_hooks.policy_file import NumpyPolicy
    from telemetry.observation import OBS_DIM

    system.scenario.require_base_model("the device loop (its head is the float32 model)")
    system.require_single_cloud("the device loop (its server answers at the final exit)")
    if isinstance(policy, str) and policy in HEURISTICS:
        return make_heuristic(policy, system, radio or system.radio(None))
    if policy is None or isinstance(policy, str | Path):
        policy = NumpyPolicy.load(policy or DEFAULT_POLICY)
    if isinstance(policy, NumpyPolicy):
        policy.check_compatible(
            (system.n_cuts, system.n_thresholds, system.n_levels),
            system.thresholds,
            OBS_DIM,
            where=f"scenario {system.scenario.source}",
            model_hash=system.profile.model_hash,
        )
    return policy


class DeviceLoop:
    """Serves requests with a ``Controller``, the model head, and a cloud server."""

    def __init__(
        self,
        head,
        controller: Controller,
        system,
        radio,
        server: tuple[str, int] | None,
        *,
        emulate_device: bool = True,
        fallback_after_s: float | None = None,
        connect_timeout_s: float = 1.0,
        retry_s: tuple[float, float] = (0.5, 5.0),
        probe_bytes: int = 4096,
        log: IO[str] | None = None,
        notify=None,
        server_name: str | None = None,
        bottlenecks: dict | None = None,
    ) -> None:
        """``head``: the model's device part (``runtime_hooks.head``: ``TorchHead`` or
        ``OnnxHead``); ``bottlenecks``: ``(cut, level) -> (codec, latent shape)`` of the
        learned bottlenecks whose encoders the head runs."""
        from runtime_hooks.cloud_link import CloudLink

        self.head = head
        self.controller = controller
        self.system = system
        self.radio = radio
        self.server = server
        self.emulate = emulate_device
        self.deadline_s = system.scenario.workload.deadline_s
        self.fallback_after_s = self.deadline_s if fallback_after_s is None else fallback_after_s
        self.log = log
        p = system.profile
        self.k = p.n_blocks
        self.n_classes = p.n_classes
        self.has_exit = p.has_exit
        self.input_shape = p.input_shape
        self.image_input = p.input_kind == "image"
        kwargs = {} if notify is None else {"notify": notify}
        self.bottlenecks: dict = dict(bottlenecks or {})  # (cut, level) -> (codec, shape)
        self.spec = None  # the model's ``ModelSpec`` when the loop built it (torch)
        self.link = CloudLink(
            server,
            self.n_classes,
            p.model_hash,
            connect_timeout_s=connect_timeout_s,
            probe_bytes=probe_bytes,
            retry_s=retry_s,
            name=server_name,
            **kwargs,
        )
        self._radio_tail_end = -math.inf
        self.t0 = time.monotonic()

    @property
    def stale_answers(self) -> int:
        """Answers that came after their request had been answered on the device."""
        return self.link.stale_answers

    @property
    def reconnects(self) -> int:
        return self.link.reconnects

    # -- construction ----------------------------------------------------------------
    @classmethod
    def create(
        cls,
        server: tuple[str, int] | None,
        policy: str | Path | object | None = None,
        scenario=None,
        radio: str | None = None,
        battery_level: float = 1.0,
        battery_sensor="psutil",
        catalog=None,
        bundle: str | Path | None = None,
        **kwargs,
    ) -> DeviceLoop:
        """A loop with the scenario's model (a ``Scenario``, a path to one, or ``None``
        for the built-in one; the model is checked against its profile), a policy (a
        policy file path, any object with ``act``, or ``None`` for the shipped policy)
        and the scenario's device, radio (``radio``: catalog name, default the
        scenario's default radio) and battery. ``bundle``: a device bundle
        (``runtime_hooks.bundle``) whose ONNX head and policy run instead of torch and
        the policy argument (numpy and onnxruntime only). ``battery_sensor``:
        ``"psutil"`` (``psutil.sensors_battery`` where the device has a battery, else
        the energy model), ``None`` (always the energy model), or any callable
        returning an object with ``percent``."""
        from sim import Scenario, System, load_scenario

        if not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario)
        system = System(scenario, catalog=catalog)
        if bundle is not None:
            head, bottlenecks, policy, spec = _bundle_head(bundle, system)
        else:
            head, bottlenecks, spec = torch_head(system, scenario)
        radio_obj = system.catalog.radio(radio or scenario.default_radio)
        policy = device_policy(policy, system, radio_obj)
        context = system.observation_context(radio_obj)
        if battery_sensor == "psutil":
            battery_sensor = psutil_battery
        battery = BatteryMonitor(system.battery_capacity_j, battery_level, sensor=battery_sensor)
        controller = Controller(policy, context, battery, rtt_s=radio_obj.rtt_s)
        loop = cls(head, controller, system, radio_obj, server, bottlenecks=bottlenecks, **kwargs)
        loop.spec = spec
        loop.warm_up()
        return loop

    def warm_up(self) -> None:
        """Run the model's blocks and exits and every codec once: first calls pay for
        lazy initialisation (tens of ms) that no request should see."""
        from profiles import codecs

        p = self.system.profile
        h = np.zeros((1, *self.input_shape), np.float32)
        for cut in range(self.k + 1):
            if cut:
                h = self.head.block(cut, h)
                if self.has_exit[cut - 1]:
                    self.head.exit(cut, h)
            if cut == self.k:
                break
            sent = np.zeros(self.input_shape, np.uint8) if cut == 0 and self.image_input else h[0]
            for level, name in enumerate(p.codecs_by_cut[cut]):
                if (cut, level) in self.bottlenecks:
                    codec, _ = self.bottlenecks[(cut, level)]
                    codecs.encode(codec, self.head.latent(cut, level, h)[0])
                else:
                    codecs.encode(name, sent)

    # -- device compute --------------------------------------------------------------
    def _compute(self, fn, device_time_s: float):
        """Run ``fn`` and, when emulating, pad to the device's time. Returns
        ``(result, seconds it took)``."""
        t = time.perf_counter()
        out = fn()
        host_s = time.perf_counter() - t
        if self.emulate and device_time_s > host_s:
            time.sleep(device_time_s - host_s)
            return out, device_time_s
        return out, host_s

    # -- the cloud link --------------------------------------------------------------
    def _link_ready(self) -> bool:
        """Adopt a connection the background reconnector made, or connect for the
        first time; applies what connecting measured. ``True`` when connected."""
        measured = self.link.poll() or self.link.connect()
        if measured is not None:
            self._adopt(measured)
        return self.link.up

    def _adopt(self, m) -> None:
        """A new connection's RTT and probe, told to the controller as the simulated
        device is told of the transfer before its episode."""
        ctl = self.controller
        ctl.on_rtt(m.rtt_s)
        if m.outage:  # at the simulator's floor of 1 byte
            ctl.on_upload(m.probe_sent_at + m.probe_tx_s, 1.0, m.probe_tx_s)
        elif m.probe_bytes:
            done = m.probe_sent_at + m.probe_tx_s + m.rtt_s
            ctl.on_upload(done, m.probe_bytes, m.probe_tx_s)
            ctl.on_energy(self._upload_energy(m.probe_sent_at, m.probe_bytes, m.probe_tx_s))
            ctl.telemetry.radio_tail_end_s = self._radio_tail_end

    def connect(self) -> bool:
        """Connect now (RTT and throughput probe) if not connected; ``False`` if the
        server cannot be reached (requests then run on the device, and the link keeps
        trying in the background, until it can)."""
        return self._link_ready()

    # -- one request -----------------------------------------------------------------
    def infer(
        self,
        item: np.ndarray,
        label: int | None = None,
        *,
        arrival: float | None = None,
        queue_len: int = 0,
        sample: int | None = None,
    ) -> RequestResult:
        """Serve one input (the model's ``input_shape``, uint8 or float32 as its data;
        a grey image may come as ``(H, W)``) that arrived at ``arrival`` (monotonic
        clock; default now). Always returns an answer."""
        s = self.system
        item = self._check_input(item)
        self._link_ready()
        start = time.monotonic()
        arrival = start if arrival is None else float(arrival)
        t = time.perf_counter()
        cloud = not self.link.known_down
        cut, thr, level = self.controller.decide(
            start - arrival, queue_len, now_s=start, cloud_available=cloud
        )
        decide_s = time.perf_counter() - t
        overridden = self.controller.overridden  # the policy's cloud action, not taken
        x = to_model_input(item[None])
        rid = self.link.next_id()
        h, exit_seen = x, None
        if overridden is not None:
            # The server is known down: the deepest exit that meets the deadline.
            answer, device_s = self._anytime(0, x, arrival, None)
            cut, thr, level = overridden  # logged: what the policy asked for
            fallback = "server_down"
        else:
            answer, device_s, h, exit_seen = self._head(x, cut, s.thresholds[thr])
            # Answered on the device while the server was unreachable: the policy saw a
            # dead link, so this, too, is counted as a server_down fallback.
            fallback = "server_down" if not cloud and self.server is not None else None
        sent = None
        if answer is None:
            sent = self._offload(rid, cut, level, item, h, arrival, exit_seen)
            answer, fallback = sent.answer, sent.fallback
            device_s += sent.device_s
        done = time.monotonic()
        energy = physics.request_energy_j(s, device_s, sent.energy_j if sent else 0.0, 0.0)
        self.controller.on_energy(energy)
        latency = done - arrival
        result = RequestResult(
            request_id=rid,
            sample=sample,
            arrival_s=arrival - self.t0,
            cut=cut,
            threshold=thr,
            level=level,
            path=answer.path,
            exit_block=answer.exit_block,
            prediction=answer.prediction,
            confidence=answer.confidence,
            label=label,
            correct=None if label is None else answer.prediction == int(label),
            latency_s=latency,
            wait_s=start - arrival,
            decide_s=decide_s,
            device_s=device_s,
            network_s=sent.network_s if sent else 0.0,
            server_s=sent.server_s if sent else 0.0,
            sent_bytes=sent.sent_bytes if sent else 0,
            energy_j=energy,
            fallback=fallback,
            deadline_miss=latency > self.deadline_s,
            server_queue_s=sent.server_queue_s if sent else 0.0,
            carbon_g=physics.request_carbon_g(s, energy, cut if answer.path == "cloud" else None),
        )
        if self.log is not None:
            self.log.write(json.dumps(asdict(result)) + "\n")
        return result

    def _check_input(self, item) -> np.ndarray:
        item = np.asarray(item)
        shape = self.input_shape
        if self.image_input and shape[0] == 1 and item.shape == shape[1:]:
            item = item.reshape(shape)
        if item.shape != shape:
            raise ValueError(f"input must have the model's shape {shape}, got {item.shape}")
        if item.dtype not in (np.uint8, np.float32) or (
            self.image_input and item.dtype != np.uint8
        ):
            kind = "uint8" if self.image_input else "uint8 or float32"
            raise ValueError(f"input must be {kind}, got {item.dtype}")
        return np.ascontiguousarray(item)

    def _head(self, x, cut: int, threshold: float):
        """Blocks ``1..cut`` on the device, each exit checked against ``threshold``
        (above 1: none). Returns ``(answer or None, device seconds, tensor at the cut,
        deepest exit computed as (block, confidence, prediction) or None)``."""
        s, k = self.system, self.k
        early = threshold <= 1.0
        device_s, h, exit_seen = 0.0, x, None
        for b in range(1, cut + 1):
            check = early and b < k and self.has_exit[b - 1]
            cost = physics.block_seconds(s, b) + (physics.exit_seconds(s, b) if check else 0.0)

            def step(h=h, b=b, check=check):
                out = self.head.block(b, h)
                return out, (self.head.exit(b, out) if check else None)

            (h, seen), took = self._compute(step, cost)
            device_s += took
            if seen is not None:
                exit_seen = (b, *seen)
                if seen[0] >= threshold:
                    answer = Answer(
                        path="exit", exit_block=b, prediction=seen[1], confidence=seen[0]
                    )
                    return answer, device_s, h, exit_seen
        if cut == k:
            (conf, pred), took = self._compute(
                lambda: self.head.exit(k, h), physics.exit_seconds(s, k)
            )
            answer = Answer(path="local", exit_block=k, prediction=pred, confidence=conf)
            return answer, device_s + took, h, exit_seen
        return None, device_s, h, exit_seen

    def _offload(self, rid, cut, level, item, h, arrival, exit_seen) -> Offloaded:
        """Encode, send, await the answer, or fall back."""
        s = self.system
        codec, shape, encode = self._encoder(cut, level, item, h)
        payload, took = self._compute(encode, s.encode_dev_s[cut][level])
        extra_device_s = took
        frame = P.request_frame(rid, cut, level, codec, shape, payload)
        now = time.monotonic()
        link = self.link
        sent = 0
        if not self._link_ready():
            reason = "server_down"
        else:
            cheap_s = self._cheap_fallback_s(cut, exit_seen)
            # Wait until the fallback would still answer by the deadline, but never
            # less than twice what the link estimate predicts (a late request is
            # better answered by the cloud than by a shallow exit).
            est = self.controller.telemetry.bandwidth_estimate_bps()
            expect_s = len(frame) * 8.0 / est + self.controller.telemetry.rtt_est_s if est else 0.0
            wait_s = max(arrival + self.fallback_after_s - now - cheap_s, 2.0 * expect_s)
            sent_at = time.monotonic()
            try:
                link.send(frame, wait_s)
                sent = len(frame)
                reply = link.await_answer(rid, max(wait_s - (time.monotonic() - sent_at), 0.0))
                got = time.monotonic()
                network_s = got - sent_at
                energy = self._radio_energy(sent_at, len(frame), network_s, reply.server_s)
                probs = np.exp(reply.logits - reply.logits.max())
                probs /= probs.sum()
                answer = Answer(
                    path="cloud",
                    exit_block=0,
                    prediction=int(probs.argmax()),
                    confidence=float(probs.max()),
                )
                return Offloaded(
                    answer=answer,
                    sent_bytes=len(frame),
                    network_s=network_s,
                    server_s=reply.server_s,
                    server_queue_s=float(reply.queue_s),
                    fallback=None,
                    device_s=extra_device_s,
                    energy_j=energy,
                )
            except TimeoutError:
                reason = "timeout" if sent else "connection_lost"
                if not sent:  # a partial frame spoils the stream
                    link.drop("the request could not be sent in time")
            except ServerError:
                reason = "server_error"
            except (OSError, P.FrameError) as exc:
                reason = "connection_lost"
                link.drop(exc)
        answer, more = self._anytime(cut, h, arrival, exit_seen)
        idle = s.device.idle_power_w * max(time.monotonic() - now - more, 0.0)
        return Offloaded(
            answer=answer,
            sent_bytes=sent,
            network_s=0.0,
            server_s=0.0,
            server_queue_s=0.0,
            fallback=reason,
            device_s=extra_device_s + more,
            energy_j=idle,
        )

    def _encoder(self, cut: int, level: int, item: np.ndarray, h: np.ndarray):
        """``(codec, shape, encode)`` of what ``(cut, level)`` sends: a learned
        bottleneck's latent, the uint8 image itself for an image codec at cut 0, else
        the tensor at the cut; ``encode()`` makes its bytes."""
        from profiles import codecs

        if (cut, level) in self.bottlenecks:  # a learned bottleneck: its encoder, then its codec
            codec, shape = self.bottlenecks[(cut, level)]
            return codec, shape, lambda: codecs.encode(codec, self.head.latent(cut, level, h)[0])
        codec = self.system.profile.codec_name(cut, level)
        array = item if cut == 0 and self.image_input else h[0]
        return codec, array.shape, lambda: codecs.encode(codec, array)

    def _exits_from(self, depth: int) -> list[int]:
        """The blocks with an exit the device can still reach from ``depth``."""
        return [b for b in range(max(depth, 1), self.k + 1) if self.has_exit[b - 1]]

    def _cheap_fallback_s(self, cut: int, exit_seen) -> float:
        """Device time of the nearest local answer from the cut."""
        if exit_seen is not None and exit_seen[0] == cut:
            return 0.0
        return physics.seconds_to_exit(self.system, cut, self._exits_from(cut)[0])

    def _anytime(self, cut: int, h, arrival: float, exit_seen):
        """The best answer the device can give by the deadline from depth ``cut`` (``h``
        the tensor there; the image at cut 0): the deepest exit at or after the cut,
        the final classifier included, whose remaining blocks and exit fit in the time
        left, else the nearest exit. Returns ``(answer, device seconds)``."""
        s = self.system
        left = arrival + self.fallback_after_s - time.monotonic()
        seen_here = exit_seen is not None and exit_seen[0] == cut

        def cost(b: int) -> float:  # device seconds from depth ``cut`` to exit ``b``
            return 0.0 if b == cut and seen_here else physics.seconds_to_exit(s, cut, b)

        exits = self._exits_from(cut)
        target = max((b for b in exits if cost(b) <= left), default=exits[0])
        if target == cut and seen_here:
            b, conf, pred = exit_seen
            return Answer(path="fallback", exit_block=b, prediction=pred, confidence=conf), 0.0

        def run(h=h):
            for b in range(cut + 1, target + 1):
                h = self.head.block(b, h)
            return self.head.exit(target, h)

        (conf, pred), took = self._compute(run, cost(target))
        answer = Answer(path="fallback", exit_block=target, prediction=pred, confidence=conf)
        return answer, took

    def _radio_energy(self, sent_at: float, nbytes: int, network_s: float, server_s: float):
        """Radio and idle energy of an answered upload (Huang et al. 2012's model, as in
        the simulator); also tells the controller what the upload measured."""
        ctl = self.controller
        tx_s = max(network_s - server_s - ctl.telemetry.rtt_est_s, 1e-4)
        energy = self._upload_energy(sent_at, nbytes, tx_s)
        ctl.on_upload(sent_at + tx_s, nbytes, tx_s)
        ctl.on_cloud_answer(sent_at + network_s, self._radio_tail_end)
        return energy + self.system.device.idle_power_w * (network_s - tx_s)

    def _upload_energy(self, sent_at: float, nbytes: int, tx_s: float) -> float:
        """Transmit energy plus the radio tail, less the part of the previous tail this
        upload reuses (``sim.physics.upload_energy_j``, as in the simulator)."""
        radio = self.radio
        tx_j, tail_j = physics.upload_energy_j(radio, sent_at, tx_s, nbytes, self._radio_tail_end)
        self._radio_tail_end = sent_at + tx_s + radio.tail_s
        return tx_j + tail_j

    # -- many requests ---------------------------------------------------------------
    def run(
        self,
        images: np.ndarray,
        labels: np.ndarray | None = None,
        arrivals_s: np.ndarray | None = None,
        samples: np.ndarray | None = None,
        progress: bool = True,
        start_at: float | None = None,
    ) -> list[RequestResult]:
        """Serve ``images`` arriving at ``arrivals_s`` seconds after the start (default:
        back to back; the start is ``start_at`` on the monotonic clock, default now).
        Requests that arrive while the device is busy queue."""
        from tqdm import tqdm

        n = len(images)
        arrivals = np.zeros(n) if arrivals_s is None else np.asarray(arrivals_s, float)
        self.connect()
        self.t0 = time.monotonic() if start_at is None else start_at
        out = []
        for i in tqdm(range(n), desc="requests", disable=not progress, unit="req"):
            due = self.t0 + arrivals[i]
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            now = time.monotonic()
            queue = int(np.searchsorted(arrivals, now - self.t0, side="right")) - i - 1
            label = None if labels is None else int(labels[i])
            sample = None if samples is None else int(samples[i])
            out.append(self.infer(images[i], label, arrival=due, queue_len=queue, sample=sample))
        return out

    def close(self) -> None:
        self.link.close()


def torch_head(system, scenario):
    """The scenario's model in torch: ``(TorchHead, bottleneck codecs, ModelSpec)``."""
    import torch

    from profiles.bottleneck import load_for_profile
    from profiles.multiexit import model_for_profile
    from runtime_hooks.head import TorchHead

    torch.set_num_threads(1)
    model, spec = model_for_profile(system.profile, scenario.model)
    bottlenecks = load_for_profile(system.profile, model, spec)
    codecs = {
        key: (f"latent{b.rate.bits}", tuple(b.latent_shape)) for key, b in bottlenecks.items()
    }
    return TorchHead(model, bottlenecks), codecs, spec


def _bundle_head(folder, system):
    """A device bundle's ONNX head and policy: ``(OnnxHead, bottleneck codecs, policy,
    ModelSpec)``, once its files match the manifest and its model is the profile's."""
    from runtime_hooks.bundle import check_bundle
    from runtime_hooks.head import OnnxHead
    from runtime_hooks.policy_file import NumpyPolicy, PolicyFileError

    folder = Path(folder)
    manifest = check_bundle(folder)
    if manifest["model_hash"] != system.profile.model_hash:
        raise PolicyFileError(
            f"{folder}: bundle for model {manifest['model_hash']}, the scenario's profile is "
            f"of model {system.profile.model_hash}"
        )
    head = manifest.get("head")
    if not head:
        raise PolicyFileError(f"{folder}: the bundle holds no model head; export it again")
    encoders = {(e["cut"], e["level"]): e["file"] for e in head["encoders"]}
    codecs = {
        (e["cut"], e["level"]): (e["codec"], tuple(e["latent_shape"])) for e in head["encoders"]
    }
    p = system.profile
    onnx_head = OnnxHead(folder, p.n_blocks, p.has_exit, encoders)
    return onnx_head, codecs, NumpyPolicy.load(folder / "policy.npz"), _profile_spec(p)


def _profile_spec(profile):
    """The model's ``ModelSpec`` as its profile recorded it (what loading its data
    needs), without building the model."""
    from profiles.multiexit import ModelSpec

    return ModelSpec(
        ref=profile.model_ref or "bundle", n_blocks=profile.n_blocks,
        input_shape=tuple(profile.input_shape), n_classes=profile.n_classes,
        has_exit=tuple(bool(v) for v in profile.has_exit),
        activation_shapes=tuple(profile.activation_shapes), model_hash=profile.model_hash,
    )  # fmt: skip
