"""An Engine.IO long-polling client spoken by hand (httpx): it sees every packet and header as sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx

from asgi_resume import protocol


class PollingClient:
    def __init__(self, base_url: str, *, accept_encoding: str = "identity", path: str = "/socket.io/") -> None:
        self.url = base_url + path
        self.http = httpx.AsyncClient(headers={"Accept-Encoding": accept_encoding}, timeout=30)
        self.sid = ""
        self.encodings: list[str] = []  # Content-Encoding of each GET response

    async def open(self, auth: dict[str, Any] | None = None) -> PollingClient:
        opening = await self.get()
        assert isinstance(opening[0], str), opening
        assert opening[0].startswith("0"), opening
        self.sid = json.loads(opening[0][1:])["sid"]
        await self.post("40" + (json.dumps(auth) if auth is not None else ""))
        reply = await self.get()
        assert any(isinstance(p, str) and p.startswith("40{") and '"sid"' in p for p in reply), reply
        return self

    def _params(self) -> dict[str, str]:
        params = {"EIO": "4", "transport": "polling"}
        if self.sid:
            params["sid"] = self.sid
        return params

    async def get(self) -> list[str | bytes]:
        response = await self.http.get(self.url, params=self._params())
        response.raise_for_status()
        self.encodings.append(response.headers.get("content-encoding", ""))
        return protocol.split_payload(response.text)

    async def post(self, *packets: str) -> None:
        response = await self.http.post(self.url, params=self._params(), content=protocol.join_payload(list(packets)))
        response.raise_for_status()
        assert response.text.lower() == "ok", response.text

    async def collect(self, predicate: Any, count: int) -> list[str | bytes]:
        """GET until ``count`` packets satisfying ``predicate`` came; returns every packet received."""
        packets: list[str | bytes] = []
        while sum(1 for p in packets if predicate(p)) < count:
            packets += await self.get()
        return packets

    async def aclose(self) -> None:
        await self.http.aclose()


class PollingTab:
    """A long-polling tab as a browser keeps one: a GET always waiting, what comes kept in order."""

    def __init__(self, url: str, token: str) -> None:
        self.client = PollingClient(url)
        self.token = token
        self.packets: list[str | bytes] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> PollingTab:
        await self.client.open({"token": self.token})
        self._task = asyncio.create_task(self._poll())
        return self

    async def _poll(self) -> None:
        while True:
            got = await self.client.get()
            async with self._changed:
                self.packets += got
                self._changed.notify_all()

    def count(self, text: str) -> int:
        """Text packets holding ``text``."""
        return sum(1 for p in self.packets if isinstance(p, str) and text in p)

    async def wait_count(self, text: str, count: int, timeout: float = 20) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.count(text) >= count)

    async def kill(self) -> None:
        """Gone the way a closed tab goes: no goodbye, no further GET."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        await self.client.aclose()


def event_args(packets: list[str | bytes], name: str = "events") -> list[Any]:
    out = []
    for packet in packets:
        if isinstance(packet, str):
            parsed = protocol.parse(packet)
            if parsed is not None and parsed.event_name == name:
                out.append(parsed.first_arg)
    return out


def is_event(packet: str | bytes) -> bool:
    return isinstance(packet, str) and packet[:2] in ("42", "45")
