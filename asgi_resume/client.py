"""The browser helper, served by the middleware at ``<engine.io path>asgi-resume.js``.

Owns: answering ``GET /socket.io/asgi-resume.js`` (or under the mount prefix) with the ES module in
``static/asgi-resume.js``. Must not touch: anything else.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

HELPER_PATH = "/asgi-resume.js"


@cache
def helper_source() -> bytes:
    return files("asgi_resume").joinpath("static/asgi-resume.js").read_bytes()


async def helper_response(scope: Scope, receive: Receive, send: Send) -> None:
    headers = {"Cache-Control": "public, max-age=3600"}
    response = Response(helper_source(), media_type="text/javascript", headers=headers)
    await response(scope, receive, send)
