"""The TCP socket under a websocket, where the server lets us reach it.

Owns: turning Nagle's algorithm off for connections whose frames wait for a log round trip.
Must not touch: anything the ASGI server does not expose.
"""

from __future__ import annotations

import socket

from starlette.types import Send


def disable_nagle(send: Send) -> None:
    """Ask the kernel to send each frame at once (TCP_NODELAY), when the server lets us reach its socket.

    With the Redis log, frames sent after the log round trip otherwise sit behind Nagle's
    algorithm until the client's delayed ACK: measured at +9.6 ms p50 on loopback with uvicorn,
    which leaves TCP_NODELAY off (benchmarks/latency.py). With the in-process log there is no such
    wait and Nagle's coalescing is worth +40% throughput, so it stays on. uvicorn's ``send`` is a
    method of its protocol object, which has the transport; any other server is left as it is.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    get_extra_info = getattr(transport, "get_extra_info", None)
    if get_extra_info is None:
        return
    try:  # (no family check: a socket uvicorn got with --fd reports AF_UNIX whatever it is)
        sock = get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError, TypeError):
        pass  # not TCP, or not a socket we may touch
