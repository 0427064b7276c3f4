"""The websocket side of an Engine.IO upgrade: a websocket that continues a long-polling session.

Owns: whether such a websocket is still a probe. Until its client sends UPGRADE it reads the
session by long-polling and ignores what this websocket carries (python-engineio only sends the
answer to the client's PING probe here meanwhile), so requests that came by long-polling are
answered there, and this websocket's close ends nothing. Must not touch: frames other than the
probe's, the pipeline, holds.
"""

from __future__ import annotations

from typing import Literal

from asgi_resume import protocol


class UpgradeProbe:
    """Is this websocket still a probe (``active``)? A websocket from the start never is."""

    __slots__ = ("_answered", "_failed", "active")

    def __init__(self, active: bool) -> None:
        self.active = active
        self._answered = False  # python-engineio answered the client's PING probe
        self._failed = False  # the client sent something else than an UPGRADE after it

    def app_sent(self, text: str | None) -> None:
        """The app sent ``text`` on this websocket (called only while ``active``)."""
        if text == protocol.EIO_PROBE_ANSWER:
            self._answered = True

    def reads(self, text: str) -> Literal["upgraded", "failed"] | None:
        """What the client's ``text`` (a frame python-engineio reads) does to the upgrade, once the
        probe was answered: ``"upgraded"``, and python-engineio reads this websocket from then on
        (it takes any packet of that type for an UPGRADE, whatever follows); ``"failed"`` (once),
        any other packet: python-engineio reads nothing more here, and puts the session back on
        long-polling, even one another websocket had upgraded."""
        if not (self.active and self._answered) or self._failed:
            return None
        if protocol.packet_type(text) != int(protocol.EIO_UPGRADE):
            self._failed = True  # (still a probe: nothing more on it is read)
            return "failed"
        self.active = False
        return "upgraded"
