"""The websocket transport: one ASGI websocket connection to the Engine.IO endpoint.

Owns: wrapping the app's ``send`` (frames go through a bounded queue to a writer
task that logs and stamps them a batch at a time) and ``receive`` (resume requests
are answered here and never reach the app; CONNECT auth names the principal).
Must not touch: what a frame means (``outbound``), how the log stores it (``log``).
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asgi_resume import protocol
from asgi_resume.outbound import Item, Outbound
from asgi_resume.resume import parse_request
from asgi_resume.runtime import Runtime
from asgi_resume.session import Session

logger = logging.getLogger("asgi_resume")

OUTBOX_SIZE = 1024  # frames queued per connection before the app's send waits (backpressure)


class WebSocketConnection:
    def __init__(self, app: ASGIApp, runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
        self.app = app
        self.runtime = runtime
        self.scope = scope
        self.receive = receive
        self.send = send
        self.session = Session(scope, runtime.log.now_ms())
        self.outbound = Outbound(runtime, self.session)
        self.accepted = False
        self.client_gone = False
        self._outbox: MemoryObjectSendStream[Item]
        self._inbox: MemoryObjectReceiveStream[Item]
        self._outbox, self._inbox = anyio.create_memory_object_stream[Item](OUTBOX_SIZE)

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._write)
            try:
                await self.app(self.scope, self._receive, self._send)
            finally:
                self._outbox.close()  # the writer sends what is queued, then ends

    # -- app -> client -------------------------------------------------------------------

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.send":
            text = message.get("text")
            item = text if text is not None else message.get("bytes")
            if item is not None:
                await self._enqueue(item)
                return
        if not self.accepted:  # the handshake (accept or reject) goes straight out
            self.accepted = kind == "websocket.accept"
            await self.send(message)
            return
        await self._enqueue(message)

    async def _enqueue(self, item: Item) -> None:
        # No checkpoint while there is room: the app's writer hands over everything it has
        # in one go, and the writer task logs it as one batch.
        try:
            self._outbox.send_nowait(item)
        except anyio.WouldBlock:
            await self._outbox.send(item)

    async def _write(self) -> None:
        async with self._inbox:
            async for first in self._inbox:
                batch = [first]
                while True:
                    try:
                        batch.append(self._inbox.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                for item in batch:
                    self.outbound.feed(item)
                for item in await self.outbound.flush():
                    await self._deliver(item)

    async def _deliver(self, item: Item) -> None:
        if self.client_gone:
            return
        message: Any
        if isinstance(item, str):
            message = {"type": "websocket.send", "text": item, "bytes": None}
        elif isinstance(item, bytes):
            message = {"type": "websocket.send", "text": None, "bytes": item}
        else:
            message = item
        try:
            await self.send(message)
        except Exception:  # noqa: BLE001 - the client is gone; the app learns it from receive()
            self.client_gone = True

    # -- client -> app -------------------------------------------------------------------

    async def _receive(self) -> Message:
        while True:
            message = await self.receive()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                if text is not None and text[:1] == protocol.EIO_MESSAGE and await self._intercept(text):
                    continue
            elif message["type"] == "websocket.disconnect":
                self.client_gone = True
            return message

    async def _intercept(self, frame: str) -> bool:
        """Look at an inbound Socket.IO packet; True when it is ours and the app must not see it."""
        try:
            packet = protocol.parse(frame)
            if packet is None:
                return False
            if packet.type == protocol.CONNECT:
                resolver = await self.runtime.resolver()
                self.session.principals[packet.namespace] = resolver.resolve(self.scope, packet.data)
                return False
            if packet.event_name != self.runtime.settings.resume_event:
                return False
            request = parse_request(packet, self.runtime.stream_key)
        except Exception:  # never let a client's frame break the connection
            logger.exception("asgi_resume could not inspect an inbound frame; passing it on")
            return False
        await self._enqueue(request)
        return True
