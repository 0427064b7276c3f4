"""An app as a user writes it, for ``uvicorn tests.support.plain_app:app`` (start-up line test)."""

import socketio

from asgi_resume import ResumeMiddleware

app = ResumeMiddleware(socketio.ASGIApp(socketio.AsyncServer(async_mode="asgi")))
