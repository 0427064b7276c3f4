"""The ASGI middleware: routes Engine.IO traffic through asgi_resume, leaves the rest alone.

Owns: deciding per ASGI scope whether asgi_resume is involved, and the lifespan of
the shared runtime. Must not touch: frames (``outbound``), transports' details
(``websocket``), storage (``log``).
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asgi_resume.client import HELPER_PATH, helper_response
from asgi_resume.config import Settings
from asgi_resume.log import StreamLog
from asgi_resume.metrics import Metrics
from asgi_resume.polling import handle_polling
from asgi_resume.runtime import Runtime
from asgi_resume.websocket import WebSocketConnection, query_param


class ResumeMiddleware:
    """Make Socket.IO streams resumable: wrap a python-socketio ``ASGIApp`` (or an app mounting one).

    Settings come from ``ASGI_RESUME_*`` environment variables; keyword arguments
    (the variable's name without the prefix, lower case) override them.
    """

    def __init__(self, app: ASGIApp, *, log: StreamLog | None = None, **settings: Any) -> None:
        self.app = app
        self.settings = Settings.load(**settings)
        self.runtime = Runtime(self.settings, log)
        self.metrics = Metrics(self.runtime) if self.settings.metrics else None

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
            await WebSocketConnection(self.app, self.runtime, scope, receive, send).run()
        elif scope["type"] == "http" and self._watches(scope) and query_param(scope, "transport") == "polling":
            await handle_polling(self.app, self.runtime, scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
        else:
            await self.app(scope, receive, send)

    def _lifespan_send(self, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await self.runtime.aclose()
            await send(message)

        return lifespan_send
