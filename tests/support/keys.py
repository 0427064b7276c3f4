"""The Redis keys of one principal's view of a stream, as a test computes them from outside."""

from __future__ import annotations

import redis.asyncio as aioredis

from asgi_resume.log import StreamKey
from asgi_resume.principal import PrincipalResolver, PrincipalSource, default_principal_key


async def stream_key(
    redis: aioredis.Redis, prefix: str, token: str, stream: str, *, namespace: str = "/", variant: str = ""
) -> StreamKey:
    """``token``'s key of ``stream`` (an ``auth:token`` principal, hashed with the key the workers share
    when ASGI_RESUME_SECRET is unset)."""
    source = PrincipalSource("auth", "token")
    principal = PrincipalResolver((source,), default_principal_key(prefix)).hash(source, token)
    return StreamKey(principal, namespace, variant, stream)


async def redis_keys(redis: aioredis.Redis, prefix: str, token: str, stream: str) -> tuple[str, str]:
    """The log and meta keys of ``token``'s view of ``stream``."""
    tag = (await stream_key(redis, prefix, token, stream)).tag()
    return f"{prefix}:{{{tag}}}:log", f"{prefix}:{{{tag}}}:meta"
