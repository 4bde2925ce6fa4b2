"""Answers remembered per ``Idempotency-Key`` request header, so that an upload sent again is
answered, not stored again.

An upload waits at most 5 s for the database before it is answered ``kept``; a client whose
own timeout is shorter gives up and sends the photo again, and its faces were stored twice (a
user test). With the header (IETF draft "The Idempotency-Key HTTP Header Field", as Stripe's
API takes it), ``POST /v1/analyze`` remembers its answer per key: a repeat of the same request
gets that answer again, a repeat while the first is still being answered waits for it, a key
reused for another request is refused.

In memory, per server process: a restart forgets every key (a retry after one is analysed and
stored again). Only successful answers are remembered: after an error, a retry runs again.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from .service import ServiceError

#: Longest key taken, in characters (Stripe's limit; a UUID is 36).
MAX_KEY = 255
#: Seconds an answer is remembered (Stripe's 24 h: a client retries within minutes).
KEEP_FOR = 24 * 3600.0
#: Answers remembered at most; beyond it, the oldest are forgotten first.
MAX_KEYS = 5000
#: Bytes of answers remembered at most (bodies and keys); beyond it, the oldest are forgotten
#: first. A plain answer is 1-3 kB, but one with ``annotated`` holds a JPEG of up to 1600 pixels
#: (a few hundred kB in base64), and 5000 of those would be gigabytes: the whole answer is kept
#: (a replay must be the same answer, and the photo is not kept to draw it again), and the bytes
#: are bounded instead, so about 150 annotated answers fit, or every one of MAX_KEYS plain ones.
#: A retry comes seconds or minutes after its first try: the newest answers are the ones asked for.
MAX_BYTES = 64 * 2**20
#: Seconds a repeat waits for the first request of its key to be answered before a 409: the
#: first takes an analysis (about a second on a CPU) and at most 5 s for the database.
WAIT = 10.0


@dataclass
class Answer:
    """An answer as it was sent: its JSON ``body`` and its ``X-Facemtl-Stored`` value."""

    body: bytes
    stored: str


@dataclass(eq=False)
class Claim:
    """A key held by the request that answers it (:meth:`Replays.keep` or :meth:`Replays.drop` ends it)."""

    key: str
    fingerprint: bytes
    answer: Answer | None = None
    at: float = 0.0  # when answered (monotonic seconds)
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def size(self) -> int:
        return len(self.key) + len(self.answer.body) if self.answer is not None else 0


def parse_key(value: str | None) -> str | None:
    """The key of an ``Idempotency-Key`` header (``None``: no header). The draft's form, a quoted
    string (``"8e03..."``), and Stripe's, the bare text, name the same key. :class:`ServiceError`
    400 if it is empty or longer than :data:`MAX_KEY`."""
    if value is None:
        return None
    key = value.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key:
        raise ServiceError(400, "the Idempotency-Key header is empty; send a unique value per upload (a UUID), or "
                                "no header")
    if len(key) > MAX_KEY:
        raise ServiceError(400, f"the Idempotency-Key header is {len(key)} characters long; at most {MAX_KEY} are "
                                "taken (a UUID is 36)")
    return key


class Replays:
    """The answers remembered per key, for ``keep_for`` seconds, at most ``max_keys`` of them and
    ``max_bytes`` in all (the oldest forgotten first); a repeat waits ``wait`` seconds at most for
    a first request still being answered. Thread-safe: the routes run in worker threads."""

    def __init__(self, keep_for: float = KEEP_FOR, max_keys: int = MAX_KEYS, max_bytes: int = MAX_BYTES,
                 wait: float = WAIT) -> None:
        self.keep_for, self.max_keys, self.max_bytes, self.wait = keep_for, max_keys, max_bytes, wait
        self._claims: OrderedDict[str, Claim] = OrderedDict()  # answered ones in the order answered
        self._bytes = 0  # of the answers remembered (Claim.size)
        self._answered = 0
        self._lock = threading.Lock()

    def claim(self, key: str, fingerprint: bytes) -> Claim | Answer:
        """The answer remembered for ``key``, or a :class:`Claim` when there is none: this request
        answers it, and must end it with :meth:`keep` or :meth:`drop`. ``fingerprint``: what makes
        two requests the same (the photo's hash, the parameters). :class:`ServiceError` 422 if
        ``key`` was used for another request; 409 if its first request is still not answered
        after :attr:`wait` seconds."""
        end = time.monotonic() + self.wait
        while True:
            with self._lock:
                self._forget(time.monotonic())
                held = self._claims.get(key)
                if held is None:
                    held = self._claims[key] = Claim(key, fingerprint)
                    return held
                if held.fingerprint != fingerprint:
                    raise ServiceError(422, "this Idempotency-Key was used for another request (another photo, "
                                            "annotate or source); use a new key for a new upload")
                if held.answer is not None:
                    return held.answer
            # (waited for outside the lock; set when answered, or dropped after an error: then this one runs)
            if not held.done.wait(max(0.0, end - time.monotonic())):
                raise ServiceError(409, f"the first request with this Idempotency-Key is still being answered after "
                                        f"{self.wait:g} s; retry shortly with the same key")

    def keep(self, claim: Claim, answer: Answer) -> None:
        """Remember ``answer`` for ``claim``'s key (a successful one: errors are :meth:`drop`-ped)."""
        with self._lock:
            if self._claims.get(claim.key) is claim:
                claim.answer, claim.at = answer, time.monotonic()
                self._claims.move_to_end(claim.key)
                self._bytes += claim.size
                self._answered += 1
                self._forget(claim.at)
        claim.done.set()

    def drop(self, claim: Claim) -> None:
        """Forget ``claim``: its request failed, and a retry with its key runs again."""
        with self._lock:
            if self._claims.get(claim.key) is claim and claim.answer is None:
                del self._claims[claim.key]
        claim.done.set()

    def __len__(self) -> int:
        """Answers remembered now."""
        return self._answered

    def _forget(self, now: float) -> None:
        """Forget answers older than :attr:`keep_for`, then the oldest beyond the bounds (under the
        lock). Keys still being answered are kept: there are no more of them than requests running."""
        size, over, gone = self._bytes, self._answered - self.max_keys, []
        for c in self._claims.values():  # the answered ones oldest first
            if c.answer is None:
                continue
            if now - c.at <= self.keep_for and over <= 0 and size <= self.max_bytes:
                break
            gone.append(c)
            size, over = size - c.size, over - 1
        for c in gone:
            del self._claims[c.key]
        self._bytes, self._answered = size, self._answered - len(gone)
