"""The on-device inference loop: real images, the real model's head, a real socket.

    python -m runtime_hooks.device --server 127.0.0.1:9300 --requests 200 \\
        [--policy runs/default/policy.npz] [--trace FILE] [--rate 2] [--json summary.json]

For each request the controller picks ``(cut, threshold, level)``; the device runs
blocks ``1..cut`` of the real ``MultiExitCNN``, checking each early exit against the
threshold; if one fires (or the whole model ran) the device answers. Otherwise the
codec encodes the tensor, a frame goes to the cloud server (through a relay shaped by
``--trace`` when given) and the server's answer comes back.

Faults: when the server is down, slow, or the connection drops mid-frame, the device
falls back to a local answer in time for the deadline: the rest of the model when it
fits, else the exit at the cut (block 1's exit at cut 0). It reconnects later with
backoff. Every request gets exactly one answer; an answer that arrives after its
request fell back is discarded (counted as ``stale_answers``).

Device speed: by default the loop runs at the speed of the scenario's device (a
micro-controller in the default scenario is ~600x slower than this host): each piece
of device compute is measured, then padded with sleep to the time the simulator
charges for it. ``--host-speed`` runs at the host's own speed instead. Energy per
request is an estimate from the scenario's power models (compute, radio transmit and
tail, idle), as in the simulator.

Python API::

    loop = DeviceLoop.create(server=("127.0.0.1", 9300))
    result = loop.infer(image_uint8_28x28)      # a RequestResult
    loop.close()
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from profiles.multiexit import to_model_input
from runtime_hooks import protocol as P
from runtime_hooks.cloud_link import ServerError
from runtime_hooks.controller import BatteryMonitor, Controller, psutil_battery
from settings.cli import (
    UsageError,
    at_least,
    check_options,
    fraction,
    non_negative,
    option,
    output_file,
    parse,
    positive,
    run_cli,
)
from settings.cli import seed as seed_range
from sim import metrics, physics

DEFAULT_POLICY = Path(__file__).resolve().parents[1] / "runs" / "default" / "policy.npz"


@dataclass
class RequestResult:
    """One request's outcome, as logged (one JSON line each)."""

    request_id: int
    sample: int | None
    arrival_s: float  # since the loop started
    cut: int
    threshold: int
    level: int
    path: str  # "exit" (an early exit fired), "local" (cut K), "cloud", "fallback"
    exit_block: int  # the block whose classifier answered on the device; 0 for the cloud
    prediction: int
    confidence: float
    label: int | None
    correct: bool | None
    latency_s: float  # arrival to answer
    wait_s: float  # arrival to decision (queueing behind earlier requests)
    decide_s: float  # the controller's decision
    device_s: float  # device compute (emulated speed unless --host-speed)
    network_s: float  # frame sent to answer received (0 when not sent)
    server_s: float  # the server's queueing + compute, as it reports
    sent_bytes: int
    energy_j: float
    # Why the cloud did not answer: "server_down" (the server was known to be down when
    # the request was decided: a cloud action became the deepest exit that meets the
    # deadline, and a local one was chosen on a dead link), "timeout", "server_error",
    # "connection_lost"; None when the cloud answered or was not needed.
    fallback: str | None
    deadline_miss: bool
    server_queue_s: float = 0.0  # the server's queueing alone, as it reports (part of server_s)


def device_policy(policy, system):
    """``policy`` as a device runs it: a policy file's path (``None``: the shipped one)
    is loaded; a policy file is checked against the system (action grid, thresholds,
    observation, model). Any other object with ``act`` is taken as it is."""
    from runtime_hooks.policy_file import NumpyPolicy
    from telemetry.observation import OBS_DIM

    if policy is None or isinstance(policy, str | Path):
        policy = NumpyPolicy.load(policy or DEFAULT_POLICY)
    if isinstance(policy, NumpyPolicy):
        policy.check_compatible(
            (system.n_cuts, system.n_thresholds, system.n_levels), system.thresholds, OBS_DIM,
            model_hash=system.profile.model_hash,
        )  # fmt: skip
    return policy


def device_context(system, radio):
    """The fixed part of a device's observation: its deadline, the action grid, its
    radio's tail and the cloud's keep-alive."""
    from telemetry.observation import ObservationContext

    return ObservationContext(
        system.scenario.workload.deadline_s, system.n_cuts, system.n_thresholds,
        system.n_levels, radio.tail_s, radio.tail_w, system.cloud.keep_alive_s,
    )  # fmt: skip


class DeviceLoop:
    """Serves requests with a ``Controller``, the model head, and a cloud server."""

    def __init__(
        self,
        model,
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
    ) -> None:
        import torch

        from runtime_hooks.cloud_link import CloudLink

        self.torch = torch
        self.model = model.eval()
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
        self.bottlenecks: dict = {}  # (cut, level) -> a learned bottleneck (its encoder)
        self.link = CloudLink(server, self.n_classes, connect_timeout_s=connect_timeout_s,
                              probe_bytes=probe_bytes, retry_s=retry_s, name=server_name,
                              **kwargs)  # fmt: skip
        self._radio_tail_end = -math.inf
        self._server_queue_s = 0.0
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
        **kwargs,
    ) -> DeviceLoop:
        """A loop with the scenario's model (a ``Scenario``, a path to one, or ``None``
        for the built-in one; the model is checked against its profile), a policy (a
        policy file path, any object with ``act``, or ``None`` for the shipped policy)
        and the scenario's device, radio
        (``radio``: catalog name, default the scenario's default radio) and battery.
        ``battery_sensor``: ``"psutil"`` (``psutil.sensors_battery`` where the device
        has a battery, else the energy model), ``None`` (always the energy model), or
        any callable returning an object with ``percent``."""
        import torch

        from profiles.bottleneck import load_for_profile
        from profiles.multiexit import model_for_profile
        from sim import Scenario, System, load_scenario

        torch.set_num_threads(1)
        if not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario)
        system = System(scenario, catalog=catalog)
        model, spec = model_for_profile(system.profile, scenario.model)
        radio_obj = system.catalog.radio(radio or scenario.default_radio)
        policy = device_policy(policy, system)
        context = device_context(system, radio_obj)
        if battery_sensor == "psutil":
            battery_sensor = psutil_battery
        battery = BatteryMonitor(system.battery_capacity_j, battery_level, sensor=battery_sensor)
        controller = Controller(policy, context, battery, rtt_s=radio_obj.rtt_s)
        loop = cls(model, controller, system, radio_obj, server, **kwargs)
        loop.spec = spec
        # Learned bottlenecks at some cuts: the device runs their encoders.
        loop.bottlenecks = load_for_profile(system.profile, model, spec)
        loop.warm_up()
        return loop

    def warm_up(self) -> None:
        """Run the model's blocks and exits and every codec once: first calls pay for
        lazy initialisation (tens of ms) that no request should see."""
        from profiles import codecs

        p = self.system.profile
        with self.torch.inference_mode():
            h = self.torch.zeros(1, *self.input_shape)
            for cut in range(self.k + 1):
                if cut:
                    h = self.model.blocks[cut - 1](h)
                    if self.has_exit[cut - 1]:
                        self._exit(cut, h)
                if cut == self.k:
                    break
                if cut == 0 and self.image_input:
                    sent = np.zeros(self.input_shape, np.uint8)
                else:
                    sent = h[0].numpy()
                for level, name in enumerate(p.codecs_by_cut[cut]):
                    bottleneck = self.bottlenecks.get((cut, level))
                    if bottleneck is not None:
                        codecs.encode(
                            f"latent{bottleneck.rate.bits}", bottleneck.encode(h)[0].numpy()
                        )
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

    def _exit(self, block: int, h):
        probs = self.torch.softmax(self.model.exits[block - 1](h), dim=1)[0]
        conf, pred = probs.max(0)
        return float(conf), int(pred)

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
        x = self.torch.from_numpy(to_model_input(item[None]))
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
        sent, network_s, server_s, energy = 0, 0.0, 0.0, 0.0
        self._server_queue_s = 0.0
        if answer is None:
            answer, sent, network_s, server_s, fallback, more_device_s, energy = self._offload(
                rid, cut, level, item, h, arrival, exit_seen
            )
            device_s += more_device_s
        path, exit_block, pred, conf = answer
        done = time.monotonic()
        energy += self.system.device.active_power_w * device_s
        self.controller.on_energy(energy)
        latency = done - arrival
        result = RequestResult(
            rid, sample, arrival - self.t0, cut, thr, level, path, exit_block, pred, conf,
            label, None if label is None else pred == int(label), latency, start - arrival,
            decide_s, device_s, network_s, server_s, sent, energy, fallback,
            latency > self.deadline_s, self._server_queue_s,
        )  # fmt: skip
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
        with self.torch.inference_mode():
            for b in range(1, cut + 1):
                check = early and b < k and self.has_exit[b - 1]
                cost = physics.block_seconds(s, b) + (physics.exit_seconds(s, b) if check else 0.0)

                def step(h=h, b=b, check=check):
                    out = self.model.blocks[b - 1](h)
                    return out, (self._exit(b, out) if check else None)

                (h, seen), took = self._compute(step, cost)
                device_s += took
                if seen is not None:
                    exit_seen = (b, *seen)
                    if seen[0] >= threshold:
                        return ("exit", b, seen[1], seen[0]), device_s, h, exit_seen
            if cut == k:
                (conf, pred), took = self._compute(
                    lambda: self._exit(k, h), physics.exit_seconds(s, k)
                )
                return ("local", k, pred, conf), device_s + took, h, exit_seen
        return None, device_s, h, exit_seen

    def _offload(self, rid, cut, level, item, h, arrival, exit_seen):
        """Encode, send, await the answer, or fall back. Returns ``(answer, sent bytes,
        network_s, server_s, fallback reason, extra device seconds, radio+idle J)``."""
        from profiles import codecs

        s = self.system
        bottleneck = self.bottlenecks.get((cut, level))
        if bottleneck is not None:  # a learned bottleneck: its encoder, then the latent codec
            codec = f"latent{bottleneck.rate.bits}"
            shape = tuple(bottleneck.latent_shape)

            def encode() -> bytes:
                with self.torch.inference_mode():
                    return codecs.encode(codec, bottleneck.encode(h)[0].numpy())
        else:
            codec = s.profile.codec_name(cut, level)
            # The image codecs take the uint8 image itself; the others the tensor at the cut.
            array = item if cut == 0 and self.image_input else h[0].numpy()
            shape = array.shape

            def encode() -> bytes:
                return codecs.encode(codec, array)

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
                self._server_queue_s = float(reply.queue_s)
                probs = np.exp(reply.logits - reply.logits.max())
                probs /= probs.sum()
                answer = ("cloud", 0, int(probs.argmax()), float(probs.max()))
                return answer, len(frame), network_s, reply.server_s, None, extra_device_s, energy
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
        return answer, sent, 0.0, 0.0, reason, extra_device_s + more, idle

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
            return ("fallback", b, pred, conf), 0.0

        def run(h=h):
            for b in range(cut + 1, target + 1):
                h = self.model.blocks[b - 1](h)
            return self._exit(target, h)

        with self.torch.inference_mode():
            (conf, pred), took = self._compute(run, cost(target))
        return ("fallback", target, pred, conf), took

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


def summarise(results: list[RequestResult], requests: int) -> dict:
    """The run's summary (what ``--json`` writes): ``sim.metrics.summarise``'s figures
    and the controller's own cost."""
    summary = metrics.summarise(metrics.records_of_results(results), requests=requests)
    decide_s = np.array([r.decide_s for r in results])
    latency_s = sum(r.latency_s for r in results)
    summary.update(
        energy_mj_per_request=summary.pop("energy_mj", math.nan),
        controller_decide_p50_us=float(np.percentile(decide_s * 1e6, 50)) if results else None,
        controller_decide_p99_us=float(np.percentile(decide_s * 1e6, 99)) if results else None,
        controller_share_of_latency=float(decide_s.sum() / max(latency_s, 1e-12)),
    )
    return summary


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux and macOS report it; else current)."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (2**20 if sys.platform == "darwin" else 2**10)
    except ImportError:
        import psutil

        return psutil.Process().memory_info().rss / 2**20


def run_in_netem(args: DeviceArgs, uplink, port: int, radio: str | None) -> int:
    """Run this command again inside a ``NetemLink`` namespace, unshaped by a relay:
    the kernel shapes the link instead."""
    import subprocess

    from runtime_hooks.netem import NetemLink, NetemUnavailable

    cmd = [sys.executable, "-m", "runtime_hooks.device", "--requests", str(args.requests),
           "--rate", str(args.rate), "--battery", str(args.battery), "--seed", str(args.seed),
           "--log", str(args.log)]  # fmt: skip
    for flag, value in (("--policy", args.policy), ("--radio", radio), ("--json", args.json),
                        ("--fallback-after-ms", args.fallback_after_ms),
                        ("--scenario", args.scenario)):  # fmt: skip
        if value is not None:
            cmd += [flag, str(value)]
    if args.host_speed:
        cmd.append("--host-speed")
    try:
        with NetemLink(uplink) as link:
            return subprocess.run(
                link.exec_prefix() + cmd + ["--server", f"{link.host_ip}:{port}"]
            ).returncode
    except NetemUnavailable as exc:
        print(f"error: --shaper tc: {exc}; use --shaper relay", file=sys.stderr)
        return 2


def server_address(text: str) -> tuple[str, int]:
    from runtime_hooks.relay import parse_address

    return parse_address(text)


@dataclass
class DeviceArgs:
    """The device loop's command line; checked before anything is written."""

    server: str = option(None, "cloud server HOST:PORT", required=True)
    scenario: Path | None = option(None, "scenario TOML (default: built-in): its model, data, "
                                   "device and radio", type=Path)  # fmt: skip
    policy: Path | None = option(None, "policy file (default: shipped)", type=Path)
    requests: int = option(100, "requests to serve", check=at_least(1))
    rate: float = option(2.0, "Poisson arrivals per second; 0: back to back", check=non_negative)
    trace: Path | None = option(None, "shape the link to this trace file", type=Path)
    shaper: str = option(
        "relay", "relay: a shaping TCP relay (portable); tc: netem in a network namespace "
        "(Linux, root, sch_netem; the server must listen on 0.0.0.0)", choices=("relay", "tc"),
    )  # fmt: skip
    radio: str | None = option(None, "catalog radio (default: by trace family)", type=str)
    host_speed: bool = option(False, "do not emulate the device speed")
    fallback_after_ms: float | None = option(None, "default: the deadline", type=float,
                                             check=positive)  # fmt: skip
    battery: float = option(1.0, "initial level (energy model)", check=fraction)
    seed: int = option(0, "seed of the images and arrivals", check=seed_range)
    log: Path = option(Path("runs/device/requests.jsonl"), "one JSON line per request",
                       check=output_file)  # fmt: skip
    json: Path | None = option(None, "write the summary here", type=Path, check=output_file)
    address: tuple[str, int] = field(default=("", 0), init=False)

    def __post_init__(self) -> None:
        check_options(self)
        try:
            self.address = server_address(self.server)
        except ValueError as exc:
            raise UsageError(f"--server: {exc}") from None
        if self.trace is not None and not self.trace.is_file():
            raise UsageError(f"--trace: {self.trace}: no such file")


def run_device(args: DeviceArgs) -> int:
    from profiles.multiexit import data_for_profile
    from runtime_hooks.policy_file import NumpyPolicy
    from runtime_hooks.relay import RelayThread, ShapingRelay, uplink_for
    from sim import load_scenario

    scenario = load_scenario(args.scenario)
    server = args.address
    uplink = uplink_for(str(args.trace), scenario) if args.trace else None
    policy = NumpyPolicy.load(args.policy or DEFAULT_POLICY)  # refused before any file is written
    radio = args.radio or (scenario.radio_for(uplink.family) if uplink else None)
    if uplink is not None and args.shaper == "tc":
        return run_in_netem(args, uplink, server[1], radio)
    relay = None
    if uplink is not None:
        relay = RelayThread(ShapingRelay(server, uplink)).start()
        server = ("127.0.0.1", relay.port)
    loop = DeviceLoop.create(
        server, policy, scenario, radio=radio, battery_level=args.battery,
        emulate_device=not args.host_speed,
        fallback_after_s=None if args.fallback_after_ms is None else args.fallback_after_ms / 1e3,
        server_name=args.server + (" (through the shaping relay)" if relay else ""),
    )  # fmt: skip
    test = data_for_profile(loop.system.profile, loop.spec, scenario.data)["test"]
    rng = np.random.default_rng(args.seed)
    samples = rng.integers(len(test.labels), size=args.requests)
    arrivals = np.cumsum(rng.exponential(1.0 / args.rate, args.requests)) if args.rate > 0 else None
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with open(args.log, "w") as log:
        loop.log = log
        if relay is not None:
            relay.relay.start_clock()
        results = loop.run(test.inputs[samples], test.labels[samples], arrivals, samples)
        loop.close()
    if relay is not None:
        relay.stop()
    summary = summarise(results, args.requests)
    summary["server"] = server_summary(loop.link, args.server)
    summary["stale_answers"] = loop.stale_answers
    summary["battery_source"] = loop.controller.battery.source
    summary["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(summary, indent=2))
    print(f"per-request log: {args.log}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


def server_summary(link, address: str) -> dict:
    """Whether the server was reached, and for how long it was not."""
    now = time.monotonic()
    down_s = sum((back or now) - down for down, back in link.outages)
    return {
        "address": address,
        "reached": link.reconnects > 0,
        "outages": len(link.outages),
        "down_s": round(down_s, 3),
    }


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: run_device(parse(DeviceArgs, argv, __doc__.splitlines()[0])))


if __name__ == "__main__":
    sys.exit(main())
