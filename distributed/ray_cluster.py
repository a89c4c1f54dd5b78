"""Joining a Ray cluster, or starting Ray on this machine, with a clear error when the
cluster is not there. Used by the sweeps (``agents.sweep``) and the Ray Serve backend
of the cloud server (``runtime_hooks.ray_serve``).

An address is ``HOST:PORT`` (what ``ray start --head`` prints), ``ray://HOST:PORT``
(Ray Client) or ``auto`` (the cluster this machine belongs to). ``None`` starts Ray
here for the length of the command.
"""

from __future__ import annotations

import re
import socket

from settings.tables import InputError

ADDRESS = re.compile(r"^(?:ray://)?(?P<host>\[[0-9a-fA-F:]+\]|[^:/\s]+):(?P<port>\d{1,5})$")


class ClusterError(InputError):
    """The Ray cluster named by an address cannot be reached or joined."""


def check_address(address: str) -> str:
    """``auto`` or ``[ray://]HOST:PORT``; anything else is refused before Ray starts."""
    match = ADDRESS.match(address)
    if address != "auto" and not (match and 0 < int(match.group("port")) < 65536):
        raise ValueError(f"expected HOST:PORT, ray://HOST:PORT or auto, got {address!r}")
    return address


def connect(address: str | None, flag: str = "--address", timeout_s: float = 5.0) -> None:
    """Start Ray on this machine (``None``) or join the cluster at ``address``. An
    unreachable address is one line naming it, found by a TCP connect before Ray
    tries (Ray itself retries for about a minute)."""
    import ray

    quiet = {"log_to_driver": False, "logging_level": "WARNING"}
    if address is None:
        ray.init(include_dashboard=False, **quiet)
        return
    match = ADDRESS.match(address)
    if match:
        host, port = match.group("host").strip("[]"), int(match.group("port"))
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
        except OSError as exc:
            raise ClusterError(
                f"{flag} {address}: no Ray cluster answers there ({exc.strerror or exc}); "
                f"start one with `ray start --head`, or leave {flag} out to run on this "
                "machine"
            ) from None
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"{flag} {address}: cannot join the Ray cluster ({exc})") from None
