"""The TCP socket under a websocket, where the server lets us reach it.

Owns: finding the server's transport under its ``send``, turning Nagle's algorithm off for
connections whose frames wait for a log round trip, and whether a write now could wait for the
client. Must not touch: anything the ASGI server does not expose.
"""

from __future__ import annotations

import asyncio
import socket

from starlette.types import Send


def transport_of(send: Send) -> asyncio.WriteTransport | None:
    """The transport under ``send``, when the server lets us reach it: uvicorn's ``send`` is a
    method of its protocol object, which has the transport; any other server gives ``None``."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    needed = ("get_extra_info", "get_write_buffer_size")
    return transport if all(callable(getattr(transport, name, None)) for name in needed) else None


def disable_nagle(transport: asyncio.WriteTransport) -> None:
    """Ask the kernel to send each frame at once (TCP_NODELAY).

    With the Redis log, frames sent after the log round trip otherwise sit behind Nagle's
    algorithm until the client's delayed ACK: measured at +9.6 ms p50 on loopback with uvicorn,
    which leaves TCP_NODELAY off (benchmarks/latency.py). With the in-process log there is no such
    wait and Nagle's coalescing is worth +40% throughput, so it stays on.
    """
    try:  # (no family check: a socket uvicorn got with --fd reports AF_UNIX whatever it is)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError, TypeError):
        pass  # not TCP, or not a socket we may touch


#: a frame at most this long (in characters: at most 4x as many bytes, with its seq stamped and
#: its websocket header) never fills an empty transport's buffer past its high-water mark (64 KiB
#: for every websocket implementation uvicorn has), where a write would wait
WRITES_AT_ONCE = 4096
_SIZED = (str, bytes)  # (a tuple: ``str | bytes`` would build a union at every call)


def writes_at_once(transport: asyncio.WriteTransport | None, item: object) -> bool:
    """Would sending ``item`` (a frame's text or bytes, or another message) now return at once, not
    wait for the client to read? Nothing is buffered for the client (the kernel took all that was
    sent so far), and a frame is small. ``False`` when the transport is out of reach."""
    if transport is None or transport.get_write_buffer_size():
        return False
    return not isinstance(item, _SIZED) or len(item) <= WRITES_AT_ONCE
