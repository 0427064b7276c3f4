"""The websocket side of an Engine.IO upgrade: a websocket that continues a long-polling session.

Owns: whether such a websocket is still a probe. Until its client sends UPGRADE it reads the
session by long-polling and ignores what this websocket carries (python-engineio only sends the
answer to the client's PING probe here meanwhile), so requests that came by long-polling are
answered there, and this websocket's close ends nothing. Must not touch: frames other than the
probe's, the pipeline, holds.
"""

from __future__ import annotations

from asgi_resume import protocol


class UpgradeProbe:
    """Is this websocket still a probe (``active``)? A websocket from the start never is."""

    __slots__ = ("_answered", "active")

    def __init__(self, active: bool) -> None:
        self.active = active
        self._answered = False  # python-engineio answered the client's PING probe

    def app_sent(self, text: str | None) -> None:
        """The app sent ``text`` on this websocket (called only while ``active``)."""
        if text == protocol.EIO_PROBE_ANSWER:
            self._answered = True

    def completed_by(self, text: str) -> bool:
        """Does the client's ``text`` (a frame python-engineio reads) complete the upgrade? From
        then on it reads this websocket. (python-engineio takes any packet of that type for an
        UPGRADE, whatever follows.)"""
        if not (self.active and self._answered):
            return False
        upgrade = protocol.packet_type(text) == int(protocol.EIO_UPGRADE)
        self.active = not upgrade
        return upgrade
