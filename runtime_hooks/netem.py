"""The second way to shape the link: Linux traffic control in a network namespace.

Where the machine allows it (root, ``ip`` and ``tc`` from iproute2, network
namespaces), ``NetemLink`` creates a namespace joined to the host by a veth pair.
The device runs inside the namespace and reaches the cloud server at the host end of
the pair. The namespace end's egress (the device's uplink) gets a ``netem`` qdisc
whose delay is half the RTT and whose rate follows the uplink trace, changed by a
thread at each step of the trace; the host end's egress (the answers) gets the other
half of the RTT. Unlike the relay (``runtime_hooks.relay``), this shapes the kernel's
own TCP: segments, ACKs, congestion control and all. netem cannot hold bytes at a
rate of zero, so an outage is emulated at 1 kbit/s.

    with NetemLink(uplink) as link:
        subprocess.run(link.exec_prefix() + ["python", "-m", "runtime_hooks.device",
                       "--server", f"{link.host_ip}:9300", ...])

The server must listen on an address the namespace can reach (``--host 0.0.0.0`` or
``link.host_ip``).
"""

from __future__ import annotations

import bisect
import os
import shutil
import subprocess
import threading
import time

from traces.trace import Trace

OUTAGE_BPS = 1000.0  # netem needs a positive rate


class NetemUnavailable(RuntimeError):
    """This machine cannot create namespaces or traffic-control qdiscs."""


def _run(*cmd: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise NetemUnavailable(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()}")


def unavailable_reason() -> str | None:
    """Why netem shaping cannot run here, or ``None`` if it can."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (network namespaces and tc)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"needs `{tool}` (iproute2)"
    name = f"splitctl-probe-{os.getpid()}"
    try:
        _run("ip", "netns", "add", name)
    except NetemUnavailable as exc:
        return str(exc)
    try:  # the kernel may lack the netem qdisc (sch_netem) even where namespaces work
        _run("ip", "-n", name, "link", "add", "p0", "type", "veth", "peer", "name", "p1")
        _run("tc", "-n", name, "qdisc", "add", "dev", "p0", "root", "netem", "delay", "1ms")
    except NetemUnavailable as exc:
        return str(exc)
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


class NetemLink:
    """A namespace whose uplink to the host follows ``uplink`` (capacity, RTT)."""

    def __init__(self, uplink: Trace, offset_s: float = 0.0, subnet: str = "10.203.7") -> None:
        tag = f"{os.getpid() % 100000}"
        self.uplink, self.offset_s = uplink, offset_s
        self.name = f"splitctl-{tag}"
        self.host_dev, self.ns_dev = f"sxh{tag}", f"sxn{tag}"
        self.host_ip, self.ns_ip = f"{subnet}.1", f"{subnet}.2"
        self.half_rtt_ms = uplink.rtt_s / 2.0 * 1e3
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="netem-rate", daemon=True)
        self.changes = 0
        self.t0 = time.monotonic()

    def exec_prefix(self) -> list[str]:
        """Prefix a command with this to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def _qdisc(self, verb: str, rate_bps: float) -> None:
        rate = max(rate_bps, OUTAGE_BPS)
        delay = f"{self.half_rtt_ms:.3f}ms"
        _run("tc", "-n", self.name, "qdisc", verb, "dev", self.ns_dev, "root", "netem",
             "delay", delay, "rate", f"{rate:.0f}bit", "limit", "100000")  # fmt: skip

    def __enter__(self) -> NetemLink:
        reason = unavailable_reason()
        if reason:
            raise NetemUnavailable(reason)
        _run("ip", "netns", "add", self.name)
        try:
            _run("ip", "link", "add", self.host_dev, "type", "veth", "peer", "name", self.ns_dev)
            _run("ip", "link", "set", self.ns_dev, "netns", self.name)
            _run("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_dev)
            _run("ip", "link", "set", self.host_dev, "up")
            _run("ip", "-n", self.name, "addr", "add", f"{self.ns_ip}/24", "dev", self.ns_dev)
            _run("ip", "-n", self.name, "link", "set", self.ns_dev, "up")
            _run("ip", "-n", self.name, "link", "set", "lo", "up")
            _run("tc", "qdisc", "add", "dev", self.host_dev, "root", "netem",
                 "delay", f"{self.half_rtt_ms:.3f}ms")  # fmt: skip
            self.t0 = time.monotonic()
            self._qdisc("add", self.uplink.rate_at(self.offset_s))
        except Exception:
            self.close()
            raise
        self._thread.start()
        return self

    def start_clock(self) -> None:
        """Trace time 0 (plus the offset) is now."""
        self.t0 = time.monotonic()

    def _follow(self) -> None:
        """Change the rate at every step of the trace (wrapping at its end)."""
        trace = self.uplink
        starts = trace.starts_s
        current = None
        while not self._stop.is_set():
            t = (time.monotonic() - self.t0 + self.offset_s) % trace.duration_s
            rate = trace.rate_at(t)
            if rate != current:
                try:
                    self._qdisc("change", rate)
                except NetemUnavailable:
                    return  # the namespace is being torn down
                current = rate
                self.changes += 1
            i = bisect.bisect_right(starts, t)
            next_change = starts[i] if i < len(starts) else trace.duration_s
            self._stop.wait(min(max(next_change - t, 0.001), 0.25))

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        subprocess.run(["ip", "link", "del", self.host_dev], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def __exit__(self, *exc) -> None:
        self.close()


def run_in_namespace(uplink: Trace, cmd: list[str], port: int) -> int:
    """Run ``cmd`` (a device command without its ``--server``) inside a ``NetemLink``
    namespace shaped to ``uplink``, against the server's ``port`` on the host end;
    returns its exit code. Raises ``NetemUnavailable`` where namespaces or netem are."""
    with NetemLink(uplink) as link:
        full = link.exec_prefix() + cmd + ["--server", f"{link.host_ip}:{port}"]
        return subprocess.run(full).returncode
