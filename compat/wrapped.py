"""open-webui, unmodified, wrapped by the middleware: ``uvicorn compat.wrapped:app``.

Configured by environment only (``ASGI_RESUME_PRESET=open-webui`` and the rest), as a deployment
would be.
"""

from open_webui.main import app as open_webui_app

from asgi_resume import ResumeMiddleware

app = ResumeMiddleware(open_webui_app)
