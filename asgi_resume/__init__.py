"""asgi_resume: resumable Socket.IO streams, as an ASGI middleware around an unchanged app."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asgi_resume.config import ConfigError, Settings
    from asgi_resume.middleware import ResumeMiddleware

__all__ = ["ConfigError", "ResumeMiddleware", "Settings"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Imported on first use, so that ``python -m asgi_resume.demo`` can start (and install what
    # it needs) on a machine that does not have starlette yet.
    if name == "ResumeMiddleware":
        from asgi_resume.middleware import ResumeMiddleware

        return ResumeMiddleware
    if name in ("ConfigError", "Settings"):
        from asgi_resume import config

        return getattr(config, name)
    raise AttributeError(f"module 'asgi_resume' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
