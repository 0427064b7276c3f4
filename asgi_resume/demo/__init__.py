"""A demo chat that survives reload: ``python -m asgi_resume.demo``."""
