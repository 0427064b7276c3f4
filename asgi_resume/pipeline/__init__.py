"""The outbound pipeline and what it keeps per connection; transport-free.

* :mod:`~asgi_resume.pipeline.units`: what flows through a batch (a closed set) and how an event
  is stamped.
* :mod:`~asgi_resume.pipeline.rules`: which events belong to which stream, which end it.
* :mod:`~asgi_resume.pipeline.connection`: what the middleware remembers about one connection;
  :mod:`~asgi_resume.pipeline.rate_limit`, :mod:`~asgi_resume.pipeline.recovery_state`: its resume
  rate limit, and what connection state recovery keeps per namespace.
* :mod:`~asgi_resume.pipeline.runtime`: what every connection of one middleware shares;
  :mod:`~asgi_resume.pipeline.repairs`: the streams the log missed frames of, until repaired;
  :mod:`~asgi_resume.pipeline.closes`: recovery sessions to close once the log answers;
  :mod:`~asgi_resume.pipeline.held_frames`: the frame objects held connections logged for recovery;
  :mod:`~asgi_resume.pipeline.heartbeat`: this process's heartbeat, for claims made in other processes.
* :mod:`~asgi_resume.pipeline.order` and :mod:`~asgi_resume.pipeline.turns`: the order streams'
  frames reach the log across a process's tabs, and the turns replay pages take;
  :mod:`~asgi_resume.pipeline.polling_feeds`: a user's long-polling tabs whose frames may still
  wait unfed in python-engineio.
* :mod:`~asgi_resume.pipeline.polling_replays`, :mod:`~asgi_resume.pipeline.replays_in_flight`:
  replays waiting for their clients, bounded per user and process (long-polling responses,
  websocket replays).
* :mod:`~asgi_resume.pipeline.batch`, :mod:`~asgi_resume.pipeline.classify`: what one connection
  was fed since its last flush, and what each frame is to it.
* :mod:`~asgi_resume.pipeline.outbound`: one connection's batches: feed, log, stamp, send.
* :mod:`~asgi_resume.pipeline.streams`: a batch's stream frames in the stream log;
  :mod:`~asgi_resume.pipeline.orphans`: the streams a connection left in flight, flagged there.
* :mod:`~asgi_resume.pipeline.inbound`, :mod:`~asgi_resume.pipeline.resume`,
  :mod:`~asgi_resume.pipeline.replay`: what a client sends us, and answering its resume requests.
* :mod:`~asgi_resume.pipeline.recovery`, :mod:`~asgi_resume.pipeline.recovery_replay`,
  :mod:`~asgi_resume.pipeline.recovery_notes`: Socket.IO connection state recovery, what a recovery
  replays, and what a connection tells its recovery sessions about itself.
"""
