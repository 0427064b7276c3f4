"""The transports: ASGI websocket connections and long-polling requests to the Engine.IO endpoint.

* :mod:`~asgi_resume.transport.engineio`: one Engine.IO session, whichever transport carries it,
  and this process's sessions by sid.
* :mod:`~asgi_resume.transport.websocket`, :mod:`~asgi_resume.transport.polling`: each transport's
  framing around the app's ``send`` and ``receive`` (with, for websockets,
  :mod:`~asgi_resume.transport.upgrade`, :mod:`~asgi_resume.transport.linger`,
  :mod:`~asgi_resume.transport.outbox` and :mod:`~asgi_resume.transport.tcp`; for long-polling,
  :mod:`~asgi_resume.transport.polling_post` and :mod:`~asgi_resume.transport.polling_presence`).
* :mod:`~asgi_resume.transport.holds`: connections kept open for the app after their client left.
"""
