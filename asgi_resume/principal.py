"""Who a connection is: the principal that may later replay what it was sent.

Owns: the principal sources (``auth:FIELD``, ``cookie:NAME``, ``header:NAME``,
``query:NAME``, ``scope:user``, ``jwt:CLAIM``) and hashing their values with a secret, so
the log never holds a credential. A ``jwt:CLAIM`` source verifies the token of the connection's
CONNECT auth (``token``, where open-webui's frontend puts it) and takes one claim: a token that
does not verify (forged, expired) gives no principal. It reads no cookie or header: those a
browser sends on its own, also on a socket another website opens, which an app that checks
only the CONNECT auth takes for anonymous (found by attack: that socket replayed its user's
streams).
Must not touch: the log, websockets, Socket.IO framing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from starlette.datastructures import Headers, QueryParams
from starlette.requests import cookie_parser
from starlette.types import Scope

Kind = Literal["auth", "cookie", "header", "query", "scope", "jwt"]
_KINDS: tuple[Kind, ...] = ("auth", "cookie", "header", "query", "scope", "jwt")
_FORMS = "auth:FIELD, cookie:NAME, header:NAME, query:NAME, scope:user, jwt:CLAIM"
DEFAULT_PRINCIPAL = "auth:token,header:authorization,scope:user"
_USER_ATTRIBUTES = ("identity", "username", "id")  # never display_name: two users may share one


@dataclass(frozen=True, slots=True)
class PrincipalSource:
    kind: Kind
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


def parse_sources(spec: str) -> tuple[PrincipalSource, ...]:
    """``"auth:token,cookie:session"`` -> sources, tried in that order."""
    sources = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        kind, _, name = item.partition(":")
        if kind not in _KINDS or not name:
            raise ValueError(f"{item!r} is not one of {_FORMS}")
        if kind == "scope" and name != "user":
            raise ValueError(f"{item!r}: the only scope source is scope:user")
        sources.append(PrincipalSource(kind, name))
    if not sources:
        raise ValueError("at least one source is needed")
    return tuple(sources)


def _plain(value: Any) -> str | None:
    """A credential value as text; ``None`` for anything empty or unusable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str | int):
        return str(value) or None
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):  # (a token nested deeper than we read)
        return None


def _scope_user(scope: Scope) -> str | None:
    user = scope.get("user")
    if user is None or getattr(user, "is_authenticated", True) is False:
        return None
    if isinstance(user, str):
        return user or None
    for attribute in _USER_ATTRIBUTES:
        try:
            value = _plain(getattr(user, attribute, None))
        except Exception:  # noqa: BLE001 - Starlette's BaseUser.identity raises NotImplementedError
            continue
        if value:
            return value
    return None


@dataclass(frozen=True, slots=True)
class JwtKey:
    """What verifies the tokens of ``jwt:CLAIM`` sources."""

    secret: str
    algorithms: tuple[str, ...]

    def claim(self, token: str, name: str) -> str | None:
        try:
            claims = jwt.decode(token, self.secret, algorithms=list(self.algorithms), options={"require": []})
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
        if not isinstance(claims, dict) or name not in claims:
            return None
        value = claims[name]
        if value is None or isinstance(value, bool) or value == "":
            return None
        try:  # typed: the claim 1 and the claim "1" are two users
            return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError):
            return None


def _connect_token(auth: Any) -> str | None:
    """The connection's token: its CONNECT auth's ``token``."""
    token = auth.get("token") if isinstance(auth, dict) else None
    return token if isinstance(token, str) and token else None


def default_principal_key(prefix: str) -> bytes:
    """The hashing key when ASGI_RESUME_SECRET is unset: every worker of one prefix derives the same.

    (It protects nothing from whoever reads Redis, no more than a key stored there would.)
    """
    return hashlib.sha256(f"asgi_resume principal key\x00{prefix}".encode()).digest()


class PrincipalResolver:
    """Turns a connection's scope and Socket.IO auth into a hashed principal."""

    def __init__(self, sources: tuple[PrincipalSource, ...], secret: bytes, jwt_key: JwtKey | None = None):
        self.sources = sources
        self._secret = secret
        self._jwt = jwt_key

    def resolve(self, scope: Scope, auth: Any = None) -> str | None:
        """The first source that yields a value, hashed; ``None`` when none does."""
        for source in self.sources:
            value = self._value(source, scope, auth)
            if value:
                return self.hash(source, value)
        return None

    def hash(self, source: PrincipalSource, value: str) -> str:
        # surrogatepass: a value from JSON (an auth field, a claim) may hold a lone surrogate
        message = f"{source}\x00{value}".encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:32]

    def _value(self, source: PrincipalSource, scope: Scope, auth: Any) -> str | None:
        if source.kind == "jwt":
            token = _connect_token(auth)
            return self._jwt.claim(token, source.name) if token and self._jwt is not None else None
        if source.kind == "auth":
            return _plain(auth.get(source.name)) if isinstance(auth, dict) else None
        if source.kind == "scope":
            return _scope_user(scope)
        if source.kind == "header":
            return Headers(scope=scope).get(source.name) or None
        if source.kind == "cookie":
            cookie = Headers(scope=scope).get("cookie")
            return cookie_parser(cookie).get(source.name) or None if cookie else None
        query = scope.get("query_string", b"")
        return QueryParams(query.decode("latin-1") if isinstance(query, bytes) else query).get(source.name) or None
