"""Settings: every option has one name, one default, one line of help.

Owns: reading ``ASGI_RESUME_*`` environment variables, constructor overrides, and
validating both. An invalid value raises :class:`ConfigError` naming the variable,
at startup, never later. Must not touch: anything that does I/O.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from asgi_resume.paths import DoneRule, parse_done_rules, parse_path
from asgi_resume.principal import DEFAULT_PRINCIPAL, PrincipalSource, parse_sources

#: Rules for open-webui's event shapes and a plain top-level ``done``. ``status``
#: events also carry ``data.data.done`` mid-stream, hence the ``chat:completion`` guard.
DEFAULT_DONE = ",".join(
    [
        "data.type=chat:completion&data.data.done",
        "data.type=chat:completion&data.data.error",
        "data.type=chat:tasks:cancel",
        "data.type=chat:message:error",
        "data.type=chat:active&data.data.active=false",
        "done",
    ]
)


ENV_PREFIX = "ASGI_RESUME_"


class ConfigError(ValueError):
    """A setting has a value the middleware cannot use."""


def _optional_str(raw: str) -> str | None:
    return raw.strip() or None


def _redis_url(raw: str) -> str | None:
    url = raw.strip()
    if not url:
        return None
    from redis.connection import parse_url  # only its parser: no connection is made here

    try:
        parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ValueError(f"{exc} (a URL such as redis://127.0.0.1:6379/0)") from None
    parts = urllib.parse.urlsplit(url)
    database = parts.path.strip("/") if parts.scheme in ("redis", "rediss") else ""  # (unix://: a socket's path)
    if database and not (database.isascii() and database.isdigit()):  # (redis-py ignores such a path)
        raise ValueError(f"the database must be a number, not {database!r} (a URL such as redis://127.0.0.1:6379/0)")
    return url


def _optional_path_spec(raw: str) -> tuple[str, ...] | None:
    return parse_path(raw) if raw.strip() else None


def _optional_rules(raw: str) -> tuple[DoneRule, ...]:
    return parse_done_rules(raw) if raw.strip() else ()


def _algorithms(raw: str) -> tuple[str, ...]:
    names = tuple(filter(None, (part.strip() for part in raw.split(","))))
    if not names:
        raise ValueError("must name at least one JWT algorithm, e.g. HS256")
    if "none" in (name.lower() for name in names):
        raise ValueError("'none' would accept unsigned tokens")
    known = jwt.algorithms.get_default_algorithms()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown JWT algorithm {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return names


def _preset(raw: str) -> str | None:
    name = raw.strip().lower()
    if not name:
        return None
    if name not in PRESETS:
        raise ValueError(f"unknown preset; known: {', '.join(sorted(PRESETS))}")
    return name


def _nonempty(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


#: the largest count a setting takes: a bound on memory, far beyond any real need, and within
#: what a deque's maxlen and Redis's MAXLEN accept
MAX_COUNT = 10_000_000
#: durations are used in milliseconds (Redis's PEXPIRE, timers): from 1 ms to about 115 days
MIN_SECONDS, MAX_SECONDS = 0.001, 10_000_000.0
MAX_BYTES = 1 << 31


def _positive_int(raw: str, most: int = MAX_COUNT) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("must be a positive integer") from None
    if not 0 < value <= most:
        raise ValueError(f"must be a positive integer up to {most:,}")
    return value


def _byte_count(raw: str) -> int:
    return _positive_int(raw, MAX_BYTES)


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a number of seconds") from None
    if not MIN_SECONDS <= value <= MAX_SECONDS:
        raise ValueError(f"must be a number of seconds from {MIN_SECONDS} to {MAX_SECONDS:,.0f}")
    return value


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be 1 or 0")


def _path(raw: str) -> str:
    path = raw.strip()
    if not path or " " in path:
        raise ValueError("must be a URL path such as /socket.io/")
    inner = path.strip("/")
    return "/" + inner + "/" if inner else "/"


def _optional_path(raw: str) -> str | None:
    path = raw.strip()
    if not path:
        return None
    if not path.startswith("/") or " " in path:
        raise ValueError("must be a URL path such as /metrics")
    return path


def _events(raw: str) -> frozenset[str] | None:
    names = frozenset(filter(None, (part.strip() for part in raw.split(","))))
    if not names:
        raise ValueError("must be * or a comma list of event names")
    return None if "*" in names else names


def _key_prefix(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", raw.strip()):
        raise ValueError("must be 1-64 characters of letters, digits, _ . : -")
    return raw.strip()


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    default: str
    parse: Callable[[str], Any]
    help: str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("preset", "", _preset, "defaults for a known app (open-webui); other settings still override them"),
    Option("redis_url", "", _redis_url, "Redis URL; unset: the in-process memory log (one process only)"),
    Option("redis_cluster", "0", _flag, "1: the URL names a node of a Redis Cluster"),
    Option("path", "/socket.io/", _path, "Engine.IO endpoint to watch, also found under a mount prefix"),
    Option("events", "*", _events, "Socket.IO event names whose frames are logged, comma separated; * for all"),
    Option("stream_id", "message_id", parse_path, "dotted path of the stream id in an event's first argument"),
    Option("done", DEFAULT_DONE, parse_done_rules, "rules that mark a stream finished: `path`, `path=value`, `&`, `,`"),
    Option("variant", "", _optional_path_spec, "dotted path whose value tells apart views sent to other audiences"),
    Option("exclude", "", _optional_rules, "rules (as for done) for events with a stream id that are not its content"),
    Option("log_calls", "0", _flag, "1: also log events the app sends with an ack id (a call to one connection)"),
    Option("resume_event", "resume-stream", _nonempty, "the inbound event the middleware answers itself"),
    Option("maxlen", "2000", _positive_int, "frames kept per stream (approximate on Redis)"),
    Option(
        "max_streams",
        "10000",
        _positive_int,
        "streams the memory log keeps (a tenth per user); the least lately used go first",
    ),
    Option(
        "max_frame_bytes",
        "1048576",
        _byte_count,
        "largest stream frame logged; a larger one goes out unstamped and its stream starts a new epoch",
    ),
    Option("ttl", "3600", _seconds, "seconds a stream's log lives after its last frame"),
    Option("done_ttl", "30", _seconds, "seconds a stream's log lives once the stream is done"),
    Option("key_prefix", "asgi_resume", _key_prefix, "prefix of every Redis key"),
    Option("principal", DEFAULT_PRINCIPAL, parse_sources, "where a connection's identity comes from, in order"),
    Option("jwt_secret", "", _optional_str, "key that verifies the tokens of jwt:CLAIM principals"),
    Option("jwt_algorithms", "HS256", _algorithms, "algorithms accepted for jwt:CLAIM principals, comma separated"),
    Option("secret", "", _optional_str, "key for hashing principals; unset: derived from the key prefix"),
    Option("write_timeout", "0.25", _seconds, "longest a frame waits for the log before it is sent unstamped"),
    Option("hold_max", "300", _seconds, "longest the app-side connection is held open after its client left"),
    Option("hold_grace", "5", _seconds, "how long a hold lasts after its streams are done (for late frames)"),
    Option("hold_idle", "30", _seconds, "a stream with no frame for this long no longer keeps a hold open"),
    Option("max_holds", "1000", _positive_int, "held connections per process; past it, a gone client is let go"),
    Option("max_holds_per_principal", "10", _positive_int, "held connections of one principal per process"),
    Option("resume_limit", "20", _positive_int, "resume requests a connection may make per 10 seconds"),
    Option("metrics", "", _optional_path, "path where Prometheus metrics are served; unset: none (needs [metrics])"),
    Option("recovery", "0", _flag, "speak Socket.IO connection state recovery (pid and offsets) to stock clients"),
    Option("recovery_window", "120", _seconds, "how long after a drop a client may recover its session"),
)


#: Defaults for apps we know. Values are option name -> raw text; ``$NAME`` reads environment NAME.
PRESETS: dict[str, dict[str, str]] = {
    "open-webui": {
        "path": "/ws/socket.io/",
        "events": "events",
        "principal": "jwt:id",
        "jwt_secret": "$WEBUI_SECRET_KEY|WEBUI_JWT_SECRET_KEY",
        "variant": "shared",
        # chat:list carries the user message's id; request:interaction:done goes to the one
        # session that answered an input request (emit to=sid), not to the user's other tabs
        "exclude": "data.type=chat:list,data.type=request:interaction:done",
        "secret": "$WEBUI_SECRET_KEY|WEBUI_JWT_SECRET_KEY",
    },
}


@dataclass(frozen=True, slots=True)
class Settings:
    preset: str | None
    redis_url: str | None
    redis_cluster: bool
    path: str
    events: frozenset[str] | None
    stream_id: tuple[str, ...]
    done: tuple[DoneRule, ...]
    variant: tuple[str, ...] | None
    exclude: tuple[DoneRule, ...]
    log_calls: bool
    resume_event: str
    maxlen: int
    max_streams: int
    max_frame_bytes: int
    ttl: float
    done_ttl: float
    key_prefix: str
    principal: tuple[PrincipalSource, ...]
    jwt_secret: str | None
    jwt_algorithms: tuple[str, ...]
    secret: str | None
    write_timeout: float
    hold_max: float
    hold_grace: float
    hold_idle: float
    max_holds: int
    max_holds_per_principal: int
    resume_limit: int
    metrics: str | None
    recovery: bool
    recovery_window: float

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``environ`` (default ``os.environ``), keyword overrides winning."""
        environ = os.environ if environ is None else environ
        known = {option.name for option in OPTIONS}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        values: dict[str, Any] = {}
        preset: dict[str, str] = {}
        for option in OPTIONS:
            if option.name in overrides:
                raw, origin = _as_text(overrides[option.name]), f"{option.name}= (overrides {option.env})"
            elif option.env in environ:
                raw, origin = environ[option.env], option.env
            elif option.name in preset:
                raw, origin = _from_preset(preset[option.name], environ, values["preset"], option)
            else:
                raw, origin = option.default, option.env
            try:
                values[option.name] = option.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{origin}: {exc} (got {raw!r}; the setting: {option.help})") from None
            if option.name == "preset" and values["preset"] is not None:
                preset = PRESETS[values["preset"]]
        settings = cls(**values)
        if any(source.kind == "jwt" for source in settings.principal):
            if settings.jwt_secret is None:
                raise ConfigError(f"{ENV_PREFIX}PRINCIPAL has a jwt: source: {ENV_PREFIX}JWT_SECRET must be set")
            keyed = [name for name in settings.jwt_algorithms if not name.startswith("HS")]
            if keyed and "-----BEGIN" not in settings.jwt_secret:
                raise ConfigError(
                    f"{ENV_PREFIX}JWT_ALGORITHMS names {', '.join(keyed)}, which verify with a public key: "
                    f"{ENV_PREFIX}JWT_SECRET must then be one in PEM (-----BEGIN PUBLIC KEY-----...)"
                )
        return settings


def _from_preset(raw: str, environ: Mapping[str, str], preset: str, option: Option) -> tuple[str, str]:
    """A preset's value; ``$A|B`` is the first of environment variables A and B that is set."""
    origin = f"{option.env} (from {ENV_PREFIX}PRESET={preset})"
    if not raw.startswith("$"):
        return raw, origin
    names = raw[1:].split("|")
    for name in names:
        if environ.get(name):
            return environ[name], f"{origin}, read from {name}"
    raise ConfigError(f"{origin}: needs {' or '.join(names)} (or {option.env}) to be set")


def _as_text(value: Any) -> str:
    """Keyword overrides may be typed (``maxlen=500``, ``events=["a", "b"]``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, str):
        return value
    if isinstance(value, Iterable):
        return ",".join(str(item) for item in value)
    return str(value)
