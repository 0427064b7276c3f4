"""The ASGI middleware: routes Engine.IO traffic through asgi_resume, leaves the rest alone.

Owns: deciding per ASGI scope whether asgi_resume is involved, the lifespan of the shared
runtime, the start-up line that says how it is configured, and finding the wrapped app's
python-engineio body limit (:func:`engineio_body_limit`: a POST is read no further than the app
would read it). Must not touch: frames
(``outbound``), transports' details (``websocket``), storage (``log``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asgi_resume import protocol
from asgi_resume.client import HELPER_PATH, helper_response
from asgi_resume.config import OPTIONS, Settings
from asgi_resume.log import StreamLog
from asgi_resume.metrics import Metrics
from asgi_resume.pipeline.runtime import Runtime
from asgi_resume.transport.engineio import EngineIOSessions, query_param
from asgi_resume.transport.holds import Holds
from asgi_resume.transport.polling import handle_polling
from asgi_resume.transport.websocket import WebSocketConnection

logger = logging.getLogger("asgi_resume")

Text = str | None
Seconds = float | str | None
Names = str | Iterable[str] | None


class ResumeMiddleware:
    """Make Socket.IO streams resumable: wrap a python-socketio ``ASGIApp`` (or an app mounting one).

    Settings come from ``ASGI_RESUME_*`` environment variables; a keyword argument (the variable's
    name without the prefix, lower case) overrides its variable. ``None`` leaves it to the
    environment. ``docs/configuration.md`` says what each one does.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        log: StreamLog | None = None,
        preset: Text = None,
        redis_url: Text = None,
        redis_cluster: bool | None = None,
        path: Text = None,
        events: Names = None,
        stream_id: Text = None,
        done: Text = None,
        variant: Text = None,
        exclude: Text = None,
        log_calls: bool | None = None,
        resume_event: Text = None,
        maxlen: int | None = None,
        max_streams: int | None = None,
        max_frame_bytes: int | None = None,
        ttl: Seconds = None,
        done_ttl: Seconds = None,
        key_prefix: Text = None,
        principal: Names = None,
        jwt_secret: Text = None,
        jwt_algorithms: Names = None,
        secret: Text = None,
        write_timeout: Seconds = None,
        hold_max: Seconds = None,
        hold_grace: Seconds = None,
        hold_idle: Seconds = None,
        max_holds: int | None = None,
        max_holds_per_principal: int | None = None,
        resume_limit: int | None = None,
        metrics: Text = None,
        recovery: bool | None = None,
        recovery_window: Seconds = None,
    ) -> None:
        given = dict(locals())
        overrides = {name: value for name, value in given.items() if name in _SETTINGS and value is not None}
        self.app = app
        self.settings = Settings.load(**overrides)
        self.runtime = Runtime(self.settings, log)
        self.holds = Holds(self.settings, self.runtime.stats)  # connections whose client left, held
        self.sessions = EngineIOSessions()  # this process's Engine.IO sessions by sid
        self.metrics = Metrics(self.runtime) if self.settings.metrics else None
        self._found_body_limit = False
        _make_visible(logger)
        logger.info("%s", startup_line(self.settings, log is not None))

    def _watches(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        if not path.endswith("/"):
            path += "/"
        return self.settings.path in path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path", "").endswith(HELPER_PATH) and self._watches(scope):
            await helper_response(scope, receive, send)
        elif self.metrics is not None and scope["type"] == "http" and scope.get("path") == self.settings.metrics:
            await self.metrics(scope, receive, send)
        elif scope["type"] == "websocket" and self._watches(scope):
            self._find_body_limit()
            await WebSocketConnection(self.app, self.runtime, self.sessions, self.holds, scope, receive, send).run()
        elif scope["type"] == "http" and self._watches(scope) and _polling(scope):
            self._find_body_limit()
            await handle_polling(self.app, self.runtime, self.sessions, scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
        else:
            await self.app(scope, receive, send)

    def _find_body_limit(self) -> None:
        """The app's ``max_http_buffer_size``, once (its routes are all there by its first Engine.IO
        request, whichever the transport): what python-engineio reads of a POST or a frame."""
        if not self._found_body_limit:
            self._found_body_limit = True
            self.runtime.max_post_body = engineio_body_limit(self.app) or self.runtime.max_post_body

    def _lifespan_send(self, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                await self.runtime.ready()  # connect the log now: a Redis too old is said at start-up
            elif message["type"] == "lifespan.shutdown.complete":
                self.holds.shut_down()
                await self.runtime.aclose()
            await send(message)

        return lifespan_send


def _polling(scope: Scope) -> bool:
    """Would python-engineio take this HTTP request for long-polling? It reads a missing
    ``transport`` as polling, reads a POST's body whatever its ``transport`` says, and answers a
    session's GET as a poll whatever it says (``transport=websocket`` with an ``Upgrade`` header
    and no ``Connection: upgrade``, say)."""
    return (
        scope.get("method") == "POST"
        or query_param(scope, "transport") in (None, "polling")
        or query_param(scope, "sid") is not None
    )


_SETTINGS = frozenset(option.name for option in OPTIONS)  # a test checks the parameters above name them all


def engineio_body_limit(app: object) -> int | None:
    """The ``max_http_buffer_size`` of the python-engineio server in ``app``'s stack, if one is found.

    Looks through ASGI wrappers (``.app``), Starlette's routes and mounts, and python-socketio's
    ``ASGIApp`` (``engineio_server``, a Socket.IO server's ``eio``).
    """
    seen: set[int] = set()
    todo = [app]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        size = getattr(item, "max_http_buffer_size", None)
        if isinstance(size, int) and not isinstance(size, bool):
            return size
        for name in ("engineio_server", "eio", "app", "middleware_stack", "router", "other_asgi_app"):
            todo.append(getattr(item, name, None))
        routes = getattr(item, "routes", None)
        if isinstance(routes, list):
            todo.extend(routes)
    return None


def startup_line(settings: Settings, custom_log: bool = False) -> str:
    """One line that says what this middleware does: which path, which log, who may resume, which JSON."""
    if custom_log:
        log = "a log given by the app"
    elif settings.redis_url is None:
        log = "memory (this process only; set ASGI_RESUME_REDIS_URL for several workers)"
    else:
        from asgi_resume.log.redis import REPLY_PARSER

        log = ("redis cluster " if settings.redis_cluster else "redis ") + _without_password(settings.redis_url)
        log += f" (replies: {REPLY_PARSER})"
    parts = [
        f"asgi_resume: watching {settings.path}",
        f"log: {log}",
        "principal: " + ",".join(str(source) for source in settings.principal),
        "JSON: " + protocol.JSON_PATH,
        "recovery: " + ("on" if settings.recovery else "off"),
    ]
    if settings.preset:
        parts.insert(1, f"preset: {settings.preset}")
    return " · ".join(parts)


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _make_visible(log: logging.Logger) -> None:
    """Show our INFO lines when the app configured no logging of its own (plain ``uvicorn app:app``).

    uvicorn configures only its own loggers, so without this the start-up line and the hold
    messages would go nowhere. Once the app (or ``logging.basicConfig``) gives the root logger a
    handler, ours stays out of the way.
    """
    if log.hasHandlers() or any(isinstance(h, _FallbackHandler) for h in log.handlers):
        return
    handler = _FallbackHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    log.addHandler(handler)
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)


class _FallbackHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Prints only while the root logger has no handler (else the app's logging has our lines)."""

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            super().emit(record)
