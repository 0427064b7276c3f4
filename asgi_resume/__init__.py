"""asgi_resume: resumable Socket.IO streams, as an ASGI middleware around an unchanged app."""

from asgi_resume.config import ConfigError, Settings
from asgi_resume.middleware import ResumeMiddleware

__all__ = ["ConfigError", "ResumeMiddleware", "Settings"]
__version__ = "0.1.0"
