"""The ``resume-stream`` request and its answers, on the wire.

Owns: validating what a client sends (``{"message_id": ID, "last_seq": N,
"epoch": E, "variant": V}``), and encoding the answer as an ack, or as a ``<event>:result``
event when the request carried no ack id. Must not touch: the log, connections, I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from asgi_resume import protocol
from asgi_resume.pipeline.rules import stream_id_of, variant_of

RESULT_SUFFIX = ":result"
RATE_LIMITED = "too many resume requests on this connection; wait a few seconds"
RESPONSE_FULL = "this long-polling response carries replays enough already; ask again once it is read"
#: why a request is not answered with a replay: its input (``bad_request``), the connection's rate
#: limit (``rate_limited``), or past the limit and as many refusals again (``flooded``: unanswered)
Refusal = Literal["bad_request", "rate_limited", "flooded"]
_EPOCH = re.compile(r"[!-~]{1,64}")  # printable ASCII: what a log could have made (log.base.new_epoch)


@dataclass(frozen=True, slots=True)
class ResumeRequest:
    """What a client asked to be replayed, or why its request was unusable."""

    namespace: str
    ack_id: int | None
    stream: str = ""
    last_seq: int = 0
    epoch: str | None = None
    variant: str = ""  # which view of the stream (ASGI_RESUME_VARIANT); "" the default one
    error: str | None = None  # why it is refused (the detail the client is told)
    refusal: Refusal = "bad_request"  # what kind of refusal, when ``error`` is set


def parse_request(packet: protocol.Packet, stream_key: str) -> ResumeRequest:
    """Validate a resume EVENT. Never raises: bad input gives a request carrying ``error``."""
    ns, ack_id = packet.namespace, packet.ack_id
    arg = packet.first_arg
    if not isinstance(arg, dict):
        return ResumeRequest(ns, ack_id, error=f"the argument must be an object with {stream_key} and last_seq")
    raw_stream = arg.get(stream_key, arg.get("stream_id"))
    stream = stream_id_of(raw_stream)
    if stream is None:
        return ResumeRequest(ns, ack_id, error=f"{stream_key} must be a non-empty string or an integer")
    last_seq = arg.get("last_seq")
    if isinstance(last_seq, bool) or not isinstance(last_seq, int) or last_seq < 0:
        return ResumeRequest(ns, ack_id, stream, error="last_seq must be a non-negative integer")
    epoch = arg.get("epoch")
    if epoch is not None and not (isinstance(epoch, str) and _EPOCH.fullmatch(epoch)):
        return ResumeRequest(ns, ack_id, stream, error="epoch must be a string from a stamped frame")
    variant = variant_of(arg.get("variant"))  # (read as the frames' own are: `true` and 3 name views too)
    if variant is None:
        return ResumeRequest(ns, ack_id, stream, error="variant must be a view's name (text, a number or true)")
    return ResumeRequest(ns, ack_id, stream, last_seq, epoch, variant)


def answer(request: ResumeRequest, body: dict[str, Any], resume_event: str, stream_key: str) -> str:
    """The frame carrying ``body`` back to the requester."""
    if request.stream:
        body = {stream_key: request.stream, **({"variant": request.variant} if request.variant else {}), **body}
    if request.ack_id is not None:
        return protocol.ack(request.ack_id, body, namespace=request.namespace)
    return protocol.event(resume_event + RESULT_SUFFIX, body, namespace=request.namespace)


def error(code: str, detail: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": False, "error": code}
    if detail:
        body["detail"] = detail
    return body
