"""What the compat suite runs and drives: processes (redis-server, the fake model, open-webui bare or
wrapped) and browser-like tabs (python-socketio clients that join chats and resume streams).

Self-contained on purpose: the main suite's tests/support moves under other hands; the few lines
taken from it (a redis-server on a free loopback port) are repeated here.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import socketio

REPO = Path(__file__).resolve().parent.parent
SECRET = "compat-webui-secret-key-of-32-bytes-or-more"
PASSWORD = "compat-password-1"
MODEL_ID = "fake-model"
SOCKETIO_PATH = "/ws/socket.io"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[Any], timeout: float = 15) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def wait_http_ready(url: str, process: subprocess.Popen[Any], log: Path, timeout: float) -> None:
    """Poll ``url`` until it answers 200, bounded by ``timeout``: a process we do not control has no
    other readiness signal. Fails at once if the process exits."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{url}: the process exited with {process.returncode}; its log:\n{tail(log)}")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not ready after {timeout:.0f} s; log:\n{tail(log)}")
            time.sleep(0.2)


# --- redis-server -----------------------------------------------------------------------------------


class RedisServer:
    """A redis-server of the suite's own on a free loopback port (never the machine's Redis)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15) -> RedisServer:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.directory), "--logfile", "", "--protected-mode", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ready = threading.Event()
        seen: list[str] = []

        def read() -> None:  # the server's own log says when it is ready; keep draining it after
            assert self.process is not None
            assert self.process.stdout is not None
            for line in self.process.stdout:
                if not ready.is_set():
                    seen.append(line)
                    if "Ready to accept connections" in line:
                        ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(timeout):
            self.stop()
            raise RuntimeError("redis-server did not start: " + "".join(seen)[-2000:])
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


# --- the fake model ---------------------------------------------------------------------------------


class FakeModel:
    """compat/fake_model.py in its own process."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.log = directory / "fake-model.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeModel:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "compat.fake_model", str(self.port)], cwd=REPO, stdout=out, stderr=out
            )
        wait_http_ready(self.url + "/v1/models", self.process, self.log, timeout=30)
        return self

    def configure(self, tokens: int, rate: float) -> None:
        httpx.post(self.url + "/control", json={"tokens": tokens, "rate": rate}, timeout=5).raise_for_status()

    async def sent(self, marker: str) -> list[float]:
        """Send times of the tokens of the streamed completion whose last user text is ``marker``."""
        async with httpx.AsyncClient(timeout=5) as client:
            runs = (await client.get(self.url + "/sent")).json()
        found = [run["sent"] for run in runs.values() if run["marker"] == marker]
        assert len(found) == 1, f"expected one streamed completion for {marker!r}, the model saw {len(found)}"
        return list(found[0])

    async def wait_sent(self, marker: str, count: int, within: float = 30) -> None:
        """Wait until the model has sent ``count`` tokens of that completion (polled: another process)."""
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                runs = (await client.get(self.url + "/sent")).json()
                if any(run["marker"] == marker and len(run["sent"]) >= count for run in runs.values()):
                    return
                assert time.monotonic() < deadline, f"the model did not send {count} tokens of {marker!r}"
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


# --- open-webui -------------------------------------------------------------------------------------


def open_webui_dir() -> Path:
    spec = importlib.util.find_spec("open_webui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_webui is not installed in this Python: run ./scripts/compat")
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass
class User:
    id: str
    email: str
    name: str
    role: str
    token: str


@dataclass
class OpenWebUI:
    """One open-webui process: ``bare`` (open_webui.main:app) or wrapped (compat.wrapped:app)."""

    name: str
    directory: Path
    model: FakeModel
    wrapped: bool
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    users: dict[str, User] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / "open-webui.log"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASGI_RESUME_REDIS")}
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        env.update(
            DATA_DIR=str(data),
            WEBUI_SECRET_KEY=SECRET,
            FRONTEND_BUILD_DIR=str(open_webui_dir() / "frontend"),
            OFFLINE_MODE="true",
            ENABLE_OLLAMA_API="false",
            OPENAI_API_BASE_URL=self.model.url + "/v1",
            OPENAI_API_KEY="compat-key",
            RAG_EMBEDDING_ENGINE="openai",
            BYPASS_EMBEDDING_AND_RETRIEVAL="true",
            ENABLE_VERSION_UPDATE_CHECK="false",
            HF_HUB_OFFLINE="1",
            BYPASS_MODEL_ACCESS_CONTROL="true",
            GLOBAL_LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        if self.wrapped:
            env["ASGI_RESUME_PRESET"] = "open-webui"
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 120) -> OpenWebUI:
        self.port = free_port()
        module = "compat.wrapped:app" if self.wrapped else "open_webui.main:app"
        args = [sys.executable, "-m", "uvicorn", module, "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--log-level", "info"]  # to the log file: the middleware's start-up line, access lines
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(args, cwd=REPO, env=self.environment(), stdout=out, stderr=out)
        wait_http_ready(self.url + "/health", self.process, self.log, timeout)
        self._make_users()
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def _make_users(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            r = http.post(
                "/api/v1/auths/signup",
                json={"name": "Owner", "email": "owner@compat.test", "password": PASSWORD},
            )
            r.raise_for_status()
            owner = r.json()
            self.users["owner"] = User(owner["id"], owner["email"], owner["name"], owner["role"], owner["token"])
            assert owner["role"] == "admin", owner
            for name in ("bob", "mallory"):
                r = http.post(
                    "/api/v1/auths/add",
                    headers={"Authorization": f"Bearer {owner['token']}"},
                    json={"name": name.title(), "email": f"{name}@compat.test", "password": PASSWORD, "role": "user"},
                )
                r.raise_for_status()
                self.users[name] = self.signin(name)

    def signin(self, name: str) -> User:
        """A fresh login: a new JWT (new jti) for the same user."""
        r = httpx.post(
            self.url + "/api/v1/auths/signin",
            json={"email": f"{name}@compat.test", "password": PASSWORD},
            timeout=30,
        )
        r.raise_for_status()
        body = r.json()
        return User(body["id"], body["email"], body["name"], body["role"], body["token"])

    # REST, as the frontend calls it

    async def api(self, token: str, method: str, path: str, body: Any = None) -> Any:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            r = await http.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code < 400, f"{method} {path} -> {r.status_code}: {r.text[:500]}"
        return r.json()

    async def new_chat(self, user: User, title: str = "compat") -> str:
        chat = {"title": title, "models": [MODEL_ID], "history": {"messages": {}, "currentId": None}, "messages": []}
        return str((await self.api(user.token, "POST", "/api/v1/chats/new", {"chat": chat}))["id"])

    async def complete(
        self, user: User, tab: Tab, chat_id: str, text: str, *, message_id: str | None = None
    ) -> Completion:
        """Start a completion as the browser does; its frames arrive on sockets (the POST returns at once)."""
        user_message_id = str(uuid.uuid4())
        message_id = message_id or str(uuid.uuid4())
        body = {
            "stream": True,
            "model": MODEL_ID,
            "messages": [{"role": "user", "content": text}],
            "params": {},
            "features": {},
            "chat_id": chat_id,
            "id": message_id,
            "parent_id": None,
            "user_message": {
                "id": user_message_id,
                "parentId": None,
                "childrenIds": [],
                "role": "user",
                "content": text,
                "models": [MODEL_ID],
                "timestamp": int(time.time()),
            },
            "session_id": tab.sid,
            "background_tasks": {"title_generation": True, "tags_generation": True, "follow_up_generation": True},
        }
        answer = await self.api(user.token, "POST", "/api/chat/completions", body)
        return Completion(chat_id=chat_id, message_id=message_id, user_message_id=user_message_id, answer=answer)


@dataclass
class Completion:
    chat_id: str
    message_id: str
    user_message_id: str
    answer: Any


# --- a browser tab ----------------------------------------------------------------------------------


def is_done(data: dict[str, Any]) -> bool:
    event = data.get("data") or {}
    kind, inner = event.get("type"), event.get("data") or {}
    return (kind == "chat:completion" and bool(inner.get("done") or inner.get("error"))) or kind in (
        "chat:message:error",
        "chat:tasks:cancel",
    )


def is_input_request(data: dict[str, Any]) -> bool:
    return ((data.get("data") or {}).get("type")) in ("input", "confirmation", "request:user_input")


@dataclass
class Frame:
    at: float  # wall clock at arrival (comparable with the fake model's send times: same machine)
    data: dict[str, Any]

    @property
    def seq(self) -> int | None:
        seq = self.data.get("seq")
        return seq if isinstance(seq, int) else None

    @property
    def shared(self) -> bool:
        return self.data.get("shared") is True


class Tab:
    """One browser tab: a python-socketio client on open-webui's socket, recording every ``events``."""

    def __init__(self, server: OpenWebUI, user: User, name: str = "tab") -> None:
        self.server, self.user, self.name = server, user, name
        self.client = socketio.AsyncClient(reconnection=False)
        self.frames: list[Frame] = []
        self.changed = asyncio.Condition()
        self.answer_inputs = True  # False: an input request is left unanswered (a tab about to drop)
        self._release = asyncio.Event()
        self.client.on("events", self._on_events)

    async def _on_events(self, data: Any) -> Any:
        frame = Frame(time.time(), data if isinstance(data, dict) else {"raw": data})
        self.frames.append(frame)
        async with self.changed:
            self.changed.notify_all()
        if is_input_request(frame.data):
            if not self.answer_inputs:
                # engine.io runs each message's handler as its own task: this one waits, the rest go on
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._release.wait(), 300)
                return None
            return "compat answer"
        return None

    async def connect(self) -> Tab:
        await self.client.connect(
            self.server.url,
            socketio_path=SOCKETIO_PATH,
            auth={"token": self.user.token},
            transports=["websocket"],
            wait_timeout=15,
        )
        return self

    @property
    def sid(self) -> str:
        sid = self.client.get_sid("/")
        assert sid, f"{self.name}: not connected"
        return str(sid)

    async def join(self, chat_id: str) -> None:
        """What the UI sends when a chat is open: ``events:chat {chat_id, data: {type: join}}``."""
        ok = await self.client.call("events:chat", {"chat_id": chat_id, "data": {"type": "join"}}, timeout=15)
        assert ok is True, f"{self.name} ({self.user.name}) could not join chat {chat_id}: {ok!r}"

    async def resume(
        self, message_id: str, last_seq: int, epoch: str | None = None, variant: str | None = None
    ) -> dict[str, Any]:
        """``resume-stream``; ``variant`` names the view followed (``"true"`` for open-webui's
        ``shared: true`` frames, as the JS helper writes it), absent for the default view."""
        request: dict[str, Any] = {"message_id": message_id, "last_seq": last_seq}
        if epoch is not None:
            request["epoch"] = epoch
        if variant is not None:
            request["variant"] = variant
        answer = await self.client.call("resume-stream", request, timeout=15)
        assert isinstance(answer, dict), f"{self.name}: resume-stream answered {answer!r}"
        return answer

    async def wait_for(self, predicate: Callable[[list[Frame]], bool], within: float, what: str) -> None:
        async def until() -> None:
            async with self.changed:
                await self.changed.wait_for(lambda: predicate(self.frames))

        try:
            await asyncio.wait_for(until(), within)
        except TimeoutError:
            raise AssertionError(
                f"{self.name} ({self.user.name}): no {what} within {within:.0f} s; "
                f"{len(self.frames)} frames seen, last: {[f.data for f in self.frames[-3:]]}"
            ) from None

    async def wait_done(self, message_id: str, within: float = 60, shared: bool | None = None) -> None:
        def done(frames: list[Frame]) -> bool:
            return any(
                f.data.get("message_id") == message_id and is_done(f.data) and (shared is None or f.shared == shared)
                for f in frames
            )

        await self.wait_for(done, within, f"done frame of {message_id}")

    def stream(self, message_id: str, shared: bool | None = False) -> list[Frame]:
        """Frames of one stream as received, optionally of one view only (own or ``shared: true``)."""
        return [
            f for f in self.frames if f.data.get("message_id") == message_id and (shared is None or f.shared == shared)
        ]

    def drop(self) -> None:
        """The network goes away: the TCP connection is aborted, no close frame, no DISCONNECT packet."""
        ws = self.client.eio.ws
        transport = None
        connection = getattr(getattr(ws, "_response", None), "connection", None) or getattr(ws, "_conn", None)
        if connection is not None:
            transport = connection.transport
        assert transport is not None, f"{self.name}: no transport to abort"
        transport.abort()

    async def close(self) -> None:
        self._release.set()
        with contextlib.suppress(Exception):  # a dropped tab has nothing left to close
            await asyncio.wait_for(self.client.disconnect(), 5)


# --- reading streams --------------------------------------------------------------------------------


def kind(frame: Frame) -> str:
    return str((frame.data.get("data") or {}).get("type"))


def delta(frame: Frame) -> str | None:
    """The token of an own-view delta frame (open-webui 0.12.4 streams Responses-API deltas)."""
    event = frame.data.get("data") or {}
    inner = event.get("data") or {}
    if event.get("type") == "response:completion" and inner.get("type") == "response.output_text.delta":
        return str(inner.get("delta"))
    return None


def output_text(frame: Frame) -> str:
    """The accumulated text of a ``chat:completion`` frame carrying ``output`` (the shared view, done)."""
    inner = (frame.data.get("data") or {}).get("data") or {}
    parts = []
    for item in inner.get("output") or []:
        for content in item.get("content") or [] if isinstance(item, dict) else []:
            if isinstance(content, dict) and isinstance(content.get("text"), str):
                parts.append(content["text"])
    return "".join(parts)


def expected_text(tokens: int) -> str:
    return "".join(f"t{i} " for i in range(1, tokens + 1))


def is_finished(frame: Frame) -> bool:
    """open-webui's last frame of a completion: ``chat:active`` false (after done, title, tags, follow-ups)."""
    event = frame.data.get("data") or {}
    return event.get("type") == "chat:active" and (event.get("data") or {}).get("active") is False


#: the events the open-webui preset says are not stream content: they go out unstamped
EXCLUDED = ("chat:list", "request:interaction:done")


def seq_problems(frames: list[Frame], start: int = 1) -> list[str]:
    """What is wrong with one view's seq as received: unstamped frames (those the preset excludes
    aside), holes, repeats, disorder, more than one epoch."""
    problems = []
    unstamped = [f for f in frames if f.seq is None and kind(f) not in EXCLUDED]
    if unstamped:
        kinds: dict[str, int] = {}
        for f in unstamped:
            kinds[kind(f)] = kinds.get(kind(f), 0) + 1
        problems.append(f"{len(unstamped)} of {len(frames)} frames unstamped {kinds}")
    seqs = [f.seq for f in frames if f.seq is not None]
    if seqs:
        expected = list(range(start, start + len(seqs)))
        if seqs != expected:
            have = set(seqs)
            holes = sorted(set(range(start, max(seqs) + 1)) - have)
            repeats = sorted({s for s in seqs if seqs.count(s) > 1})
            disorder = sum(1 for x, y in itertools.pairwise(seqs) if y <= x)
            problems.append(
                f"seqs {seqs[:8]}..{seqs[-3:]} not {start}..{start + len(seqs) - 1}: "
                f"holes {holes[:10]}{'...' if len(holes) > 10 else ''} ({len(holes)}), repeats {repeats[:10]}, "
                f"{disorder} out of order"
            )
    epochs = {f.data.get("epoch") for f in frames if f.seq is not None}
    if len(epochs) > 1:
        problems.append(f"{len(epochs)} epochs: {epochs}")
    return problems


def token_problems(frames: list[Frame], tokens: int) -> list[str]:
    got = [d for d in (delta(f) for f in frames) if d is not None]
    want = [f"t{i} " for i in range(1, tokens + 1)]
    if got == want:
        return []
    missing = [t for t in want if t not in got]
    twice = sorted({t for t in got if got.count(t) > 1}, key=lambda t: int(t[1:]))
    return [
        f"{len(got)} token frames for {tokens} tokens: missing {missing[:10]} ({len(missing)}), "
        f"twice {twice[:10]} ({len(twice)}), in order: {sorted(got, key=lambda t: int(t[1:])) == got}"
    ]


def assemble(before: list[Frame], last_seq: int, after: list[Frame]) -> tuple[list[Frame], list[str]]:
    """What a client that applies frames by seq ends up with: ``before`` up to ``last_seq`` from the old
    connection, then the new connection's frames ordered by seq, dropping ``seq <= last applied``.
    Problems: unstamped frames on the new connection (they cannot be placed), holes, repeats that differ."""
    problems = []
    kept = [f for f in before if f.seq is not None and f.seq <= last_seq]
    unstamped = [f for f in after if f.seq is None and kind(f) not in EXCLUDED]
    if unstamped:
        problems.append(f"{len(unstamped)} frames unstamped after the resume: {[kind(f) for f in unstamped][:8]}")
    by_seq: dict[int, Frame] = {}
    for f in after:
        if f.seq is None or f.seq <= last_seq:
            continue
        if f.seq in by_seq and {k: v for k, v in by_seq[f.seq].data.items()} != f.data:
            problems.append(f"seq {f.seq} received twice with different content")
        by_seq.setdefault(f.seq, f)
    if by_seq:
        holes = sorted(set(range(last_seq + 1, max(by_seq) + 1)) - set(by_seq))
        if holes:
            problems.append(f"after last_seq {last_seq}: holes {holes[:10]} ({len(holes)}) up to {max(by_seq)}")
    epochs = {f.data.get("epoch") for f in kept + list(by_seq.values())}
    if len(epochs) > 1:
        problems.append(f"epochs differ across the resume: {epochs}")
    return kept + [by_seq[s] for s in sorted(by_seq)], problems


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def latencies(frames: list[Frame], sent: list[float]) -> list[float]:
    """Per token: arrival at the client minus the fake model's send time, in ms."""
    out = []
    for f in frames:
        token = delta(f)
        if token is not None:
            i = int(token.strip()[1:])
            if 1 <= i <= len(sent):
                out.append((f.at - sent[i - 1]) * 1000)
    return out
