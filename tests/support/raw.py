"""A Socket.IO client spoken by hand over a websocket: it sees every frame exactly as sent."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import websockets

from asgi_resume import protocol


class RawClient:
    def __init__(
        self,
        base_url: str,
        *,
        auth: dict[str, Any] | None = None,
        path: str = "/socket.io/",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = base_url.replace("http://", "ws://") + path + "?EIO=4&transport=websocket"
        self.auth = auth
        self.headers = headers or {}
        self.frames: list[str | bytes] = []  # everything but pings, in arrival order
        self.arrived: list[float] = []  # when each of them came (time.monotonic())
        self.eio_sid: str | None = None
        self.closed = asyncio.Event()
        self._changed = asyncio.Condition()
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None
        self.answer_pings = True
        self.namespaces: tuple[str, ...] = ()

    async def connect(self, namespaces: tuple[str, ...] = ("/",)) -> RawClient:
        self.namespaces = namespaces
        self._ws = await websockets.connect(
            self.url, max_size=None, ping_interval=None, additional_headers=self.headers
        )
        opening = await self._ws.recv()
        assert opening.startswith("0"), opening
        self.eio_sid = json.loads(opening[1:])["sid"]
        self._reader = asyncio.create_task(self._read())
        for ns in namespaces:
            prefix = "" if ns == "/" else ns + ","
            await self.send("40" + prefix + (json.dumps(self.auth) if self.auth is not None else ""))
            await self.wait_for(lambda f, prefix=prefix: isinstance(f, str) and f.startswith("40" + prefix + "{"))
        return self

    async def _read(self) -> None:
        try:
            async for message in self._ws:
                if message == protocol.EIO_PING:
                    if self.answer_pings:
                        await self._ws.send(protocol.EIO_PONG)
                    continue
                async with self._changed:
                    self.arrived.append(time.monotonic())
                    self.frames.append(message)
                    self._changed.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()
            async with self._changed:
                self._changed.notify_all()

    async def send(self, frame: str | bytes) -> None:
        await self._ws.send(frame)

    async def emit(self, name: str, *args: Any, ack_id: int | None = None, namespace: str = "/") -> None:
        await self.send(protocol.event(name, *args, namespace=namespace, ack_id=ack_id))

    async def wait_for(
        self, predicate: Callable[[str | bytes], bool], timeout: float = 10.0, since: int = 0
    ) -> str | bytes:
        """The first frame from index ``since`` (already here or still to come) that satisfies ``predicate``."""
        checked = since

        def find() -> str | bytes | None:
            nonlocal checked
            for frame in self.frames[checked:]:
                checked += 1
                if predicate(frame):
                    return frame
            return None

        async with asyncio.timeout(timeout), self._changed:
            while True:
                found = find()
                if found is not None:
                    return found
                if self.closed.is_set():
                    raise ConnectionError(f"closed before a matching frame; frames: {self.frames[-5:]!r}")
                await self._changed.wait()

    async def wait_count(self, predicate: Callable[[str | bytes], bool], count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: sum(1 for f in self.frames if predicate(f)) >= count)

    async def request(self, name: str, arg: Any, ack_id: int, namespace: str = "/", timeout: float = 10.0) -> Any:
        """Emit with an ack id and return the ack's first argument."""
        since = len(self.frames)  # the answer to this request, not to an earlier one with the same id
        await self.emit(name, arg, ack_id=ack_id, namespace=namespace)
        prefix = "43" + ("" if namespace == "/" else namespace + ",") + str(ack_id) + "["
        frame = await self.wait_for(lambda f: isinstance(f, str) and f.startswith(prefix), timeout, since)
        assert isinstance(frame, str)
        args = json.loads(frame[len(prefix) - 1 :])
        return args[0] if args else None

    def events(self, name: str = "events", namespace: str = "/") -> list[Any]:
        """First arguments of the ``name`` events received so far."""
        out = []
        for frame in self.frames:
            if isinstance(frame, str):
                packet = protocol.parse(frame)
                if packet is not None and packet.event_name == name and packet.namespace == namespace:
                    out.append(packet.first_arg)
        return out

    def seqs(self, message_id: str, name: str = "events") -> list[int | None]:
        """The seq of every frame of one stream, in arrival order."""
        return [
            arg.get("seq") for arg in self.events(name) if isinstance(arg, dict) and arg.get("message_id") == message_id
        ]

    async def wait_seqs(self, message_id: str, count: int, timeout: float = 10.0) -> list[int | None]:
        """Wait until ``count`` frames of the stream arrived; return their seqs."""

        def of_stream(frame: str | bytes) -> bool:
            return isinstance(frame, str) and f'"message_id":"{message_id}"' in frame and frame[:2] in ("42", "45")

        await self.wait_count(of_stream, count, timeout)
        return self.seqs(message_id)

    async def kill(self) -> None:
        """Drop the connection the way a reload or a dead network does: no close frame."""
        self._ws.transport.abort()
        if self._reader is not None:
            await self._reader

    async def close(self) -> None:
        """Leave as socket.io clients do: a DISCONNECT per namespace, then the websocket close."""
        if self._ws is not None:
            try:
                for ns in self.namespaces:
                    await self._ws.send("41" if ns == "/" else f"41{ns},")
            except websockets.ConnectionClosed:
                pass
            await self._ws.close()
        if self._reader is not None:
            await self._reader


class DeafClient:
    """A websocket client over a bare socket with a tiny receive buffer: it CONNECTs as ``auth`` names,
    then reads nothing more (a backgrounded tab on a bad network; a client that will not read).
    The server's writes to it soon wait for the socket."""

    def __init__(self, base_url: str, auth: dict[str, Any], *, read_first_event: bool = False) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self.address, self.auth = (host, int(port)), auth
        self.read_first_event = read_first_event  # read one EVENT too, before it stops reading
        self.reply = ""  # the CONNECT reply it read
        self.first_event = ""  # the EVENT it read, if asked to
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> DeafClient:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window stays small
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, self.address)
        reader, self._writer = await asyncio.open_connection(sock=sock)
        self._reader = reader
        key = base64.b64encode(os.urandom(16)).decode()
        self._writer.write(
            f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        await reader.readuntil(b"\r\n\r\n")
        await read_frame(reader)  # Engine.IO's OPEN
        self._writer.write(masked_frame("40" + json.dumps(self.auth)))
        while not (frame := (await read_frame(reader)).decode()).startswith("40"):
            pass
        self.reply = frame
        while self.read_first_event and not (frame := (await read_frame(reader)).decode()).startswith("42"):
            pass
        self.first_event = frame if self.read_first_event else ""
        self._writer.transport.pause_reading()
        return self

    async def read_until(self, done: Callable[[str], bool]) -> str:
        """Read again, up to the first text frame ``done`` accepts (returned), then stop reading."""
        assert self._reader is not None
        assert self._writer is not None
        self._writer.transport.resume_reading()
        while not done(frame := (await read_frame(self._reader)).decode(errors="replace")):
            pass
        self._writer.transport.pause_reading()
        return frame

    def send(self, text: str) -> None:
        """Send a text frame (it still reads nothing)."""
        assert self._writer is not None
        self._writer.write(masked_frame(text))

    def kill(self) -> None:
        if self._writer is not None:
            self._writer.transport.abort()


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """One server frame's payload, read off a bare socket (the server does not mask)."""
    head = await reader.readexactly(2)
    size = head[1] & 0x7F
    if size == 126:
        size = struct.unpack("!H", await reader.readexactly(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", await reader.readexactly(8))[0]
    return await reader.readexactly(size)


def masked_frame(text: str) -> bytes:
    """A client's websocket text frame, any length (clients mask theirs)."""
    payload, mask = text.encode(), os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, 0x80 | size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, size)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
