"""Free TCP ports for servers the tests start, chosen outside the kernel's ephemeral range.

A port the kernel hands out for `bind(("127.0.0.1", 0))` comes from the ephemeral range
(`/proc/sys/net/ipv4/ip_local_port_range`, 32768-60999 by default), the same range every outgoing connection and
every server that binds port 0 draws from. A port picked that way and bound a minute later (the service after vLLM
has started and opened its own sockets) can be taken by then: CI saw `[Errno 98] address already in use`. A port
below that range is never handed out by the kernel, so only another test's explicit choice can collide with it.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_FALLBACK_RANGE = (32768, 60999)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return _FALLBACK_RANGE


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and outside the ephemeral range (falls back to one inside it)."""
    low, _ = _ephemeral_range()
    candidates = random.sample(range(10000, low), k=min(200, max(low - 10000, 0)))
    for port in candidates:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
