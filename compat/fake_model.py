"""A fake OpenAI-compatible model: numbered tokens ``t1 ``, ``t2 ``, ... streamed at a fixed rate.

Run as its own process (``python -m compat.fake_model PORT``) so its timing does not share a GIL
with the clients that measure latency:

- ``GET /v1/models``: one model, ``fake-model``;
- ``POST /v1/chat/completions`` with ``stream: true``: SSE chunks, one token each, on an absolute
  schedule (no drift); every token's wall-clock send time is kept, per completion;
- non-streamed requests (open-webui's titles, tags, follow-ups) get small JSON at once;
- ``POST /control {tokens, rate}`` sets the shape of the next streams (default 300 at 30/s);
- ``GET /sent``: ``{completion id: {"marker": first user text, "sent": [t1 time, t2 time, ...]}}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

MODEL_ID = "fake-model"
SHAPE = {"tokens": 300, "rate": 30.0}
SENT: dict[str, dict[str, Any]] = {}


def token(i: int) -> str:
    return f"t{i} "


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
            return str(content or "")
    return ""


async def models(_: Request) -> JSONResponse:
    return JSONResponse(
        {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "x"}]}
    )


async def control(request: Request) -> JSONResponse:
    body = await request.json()
    SHAPE["tokens"] = int(body.get("tokens", SHAPE["tokens"]))
    SHAPE["rate"] = float(body.get("rate", SHAPE["rate"]))
    return JSONResponse(SHAPE)


async def sent(_: Request) -> JSONResponse:
    return JSONResponse(SENT)


async def completions(request: Request) -> JSONResponse | StreamingResponse:
    body = await request.json()
    created = int(time.time())
    cid = "chatcmpl-" + uuid.uuid4().hex[:12]
    if not body.get("stream"):
        # open-webui's background tasks (title, tags, follow-ups) parse JSON out of the content
        text = json.dumps({"title": "Compat chat", "tags": ["compat"], "follow_ups": ["More?"]})
        return JSONResponse(
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": MODEL_ID,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )
    count, interval = SHAPE["tokens"], 1.0 / SHAPE["rate"]
    times: list[float] = []
    SENT[cid] = {"marker": _last_user_text(body), "sent": times}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": MODEL_ID,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(payload)}\n\n".encode()

    async def stream():  # type: ignore[no-untyped-def]
        yield chunk({"role": "assistant", "content": ""})
        start = time.monotonic()
        for i in range(1, int(count) + 1):
            delay = start + (i - 1) * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            times.append(time.time())
            yield chunk({"content": token(i)})
        yield chunk({}, "stop")
        yield b"data: [DONE]\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")


app = Starlette(
    routes=[
        Route("/v1/models", models),
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/control", control, methods=["POST"]),
        Route("/sent", sent),
    ]
)

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
