"""Names of a stream's histories (epochs), of a recovery session's generations, and of this process.

Owns: drawing them (eight random characters, no system call each: one was 1 µs of every Redis
append request) and the list of epochs a reset names. Must not touch: what they name.
"""

from __future__ import annotations

import os
import random
import string

_NAME_ALPHABET = string.ascii_letters + string.digits
#: every pair of the alphabet's characters: a name (epoch, generation) is four of them, picked by 16 random bits each
_NAME_PAIRS = [a + b for a in _NAME_ALPHABET for b in _NAME_ALPHABET]
#: a generator of its own, seeded from the system's randomness (again in a forked worker): an epoch
#: is drawn for every Redis append request, in case the script starts a history with it
_names_random = random.Random()
os.register_at_fork(after_in_child=_names_random.seed)


def _fresh_name() -> str:
    """Eight characters drawn at random: names a history, guards nothing."""
    # no system call per name (one was 1 µs of every Redis append request)
    bits, pairs = _names_random.getrandbits(64), _NAME_PAIRS
    n = len(pairs)
    return (
        pairs[(bits & 0xFFFF) % n]
        + pairs[(bits >> 16 & 0xFFFF) % n]
        + pairs[(bits >> 32 & 0xFFFF) % n]
        + pairs[(bits >> 48) % n]
    )


def new_epoch() -> str:
    """A fresh epoch: names one history of a stream, changes when the log is lost."""
    return _fresh_name()


def with_epoch(named: str, epoch: str) -> str:
    """``named`` (the epochs a reset names, comma-separated; "": whatever the stream's is) and
    ``epoch`` too: a stream in any of them is reset. At most 8 are kept (the first, then the latest)."""
    if not named:
        return named
    names = named.split(",")
    if epoch in names:
        return named
    return ",".join([*names[:1], *names[1:][-6:], epoch])


_process = [_fresh_name()]  # this process's name (drawn again in a forked child)
os.register_at_fork(after_in_child=lambda: _process.__setitem__(0, _fresh_name()))


def process_name() -> str:
    """This process's name: a connection's id starts with it (``<process>.<random>``), so that a
    claim made elsewhere knows whose heartbeat says the connection's process is still running."""
    return _process[0]


def process_of(connection: str) -> str:
    """The name of the process a connection id was drawn in ("" if it names none)."""
    return connection.partition(".")[0] if "." in connection else ""


def new_generation() -> str:
    """A fresh generation: names one connection's part of a recovery session's log (a claim
    starts a new one, so that the old connection's late frames cannot land in the new one's)."""
    return _fresh_name()
