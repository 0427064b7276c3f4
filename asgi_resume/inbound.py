"""What the middleware takes from a client's frames, whatever the transport.

Owns: reading an inbound Socket.IO packet for the two things that concern us: a
CONNECT (its auth names the connection's principal in that namespace, and starts the
clock a stream's first frame is matched from) and a ``resume-stream`` EVENT (which
becomes a :class:`ResumeRequest` and never reaches the app). Must not touch: I/O.
"""

from __future__ import annotations

import logging

from asgi_resume import protocol
from asgi_resume.resume import ResumeRequest, parse_request
from asgi_resume.runtime import Runtime
from asgi_resume.session import Session

logger = logging.getLogger("asgi_resume")


async def inspect(runtime: Runtime, session: Session, frame: str) -> ResumeRequest | None:
    """Note what ``frame`` tells about the client; a resume request is returned, to be answered here."""
    if frame[:2] not in ("40", "42"):
        return None
    try:
        packet = protocol.parse(frame)
        if packet is None:
            return None
        if packet.type == protocol.CONNECT:
            if not session.principals:
                session.started_ms = runtime.log.now_ms()
            resolver = await runtime.resolver()
            session.principals[packet.namespace] = resolver.resolve(session.scope, packet.data)
            return None
        if packet.event_name != runtime.settings.resume_event:
            return None
        return parse_request(packet, runtime.stream_key)
    except Exception:  # never let a client's frame break the connection
        logger.exception("asgi_resume could not inspect an inbound frame; passing it on")
        return None
