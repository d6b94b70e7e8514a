"""Sign-in throttling: failed passwords lock the username and the client address for growing
intervals, and a locked sign-in is answered (429, ``Retry-After``) without hashing anything.

Each failure costs the console an argon2 hash (tens of milliseconds of a core, on purpose),
so unthrottled guessing is both a password attack and a CPU denial of service. Counters:

- per username (known or not): ``user_limit`` failures lock it for ``base_lock_s``; each
  further failure after a lock expires doubles the lock, up to ``max_lock_s``;
- per client address, across usernames: the same with ``address_limit`` (higher: an office
  behind one NAT address shares it);
- a successful sign-in clears its username's counter (not the address's: one valid account
  must not buy an address unlimited guesses at others); a counter with no failure for
  ``forget_s`` after its lock is forgotten.

In memory, per console process (``max_keys`` bounds it; the oldest are dropped first).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Counter:
    failures: int = 0
    last_failure: float = 0.0
    locked_until: float = 0.0


@dataclass(frozen=True)
class Lock:
    """A lock just set: what the operator sees in the log."""

    kind: str  # user | address
    who: str
    failures: int
    locked_until: float  # the throttle's clock (time.time by default)
    lock_s: float


class SignInThrottle:
    def __init__(self, *, user_limit: int = 5, address_limit: int = 20, base_lock_s: float = 30.0,
                 max_lock_s: float = 900.0, forget_s: float = 900.0, clock: Callable[[], float] = time.time,
                 max_keys: int = 100_000) -> None:
        self.user_limit, self.address_limit = user_limit, address_limit
        self.base_lock_s, self.max_lock_s, self.forget_s = base_lock_s, max_lock_s, forget_s
        self.clock = clock
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._c: OrderedDict[tuple[str, str], _Counter] = OrderedDict()

    def _get(self, key: tuple[str, str], now: float) -> _Counter | None:
        c = self._c.get(key)
        if c is not None and now >= c.locked_until and now - max(c.last_failure, c.locked_until) > self.forget_s:
            del self._c[key]
            return None
        return c

    def retry_after(self, username: str, address: str) -> float:
        """Seconds until this sign-in may be tried (0: now). Checked before any hash."""
        now = self.clock()
        with self._lock:
            waits = [c.locked_until - now for k in (("user", username), ("address", address))
                     if (c := self._get(k, now)) is not None]
        return max([0.0, *waits])

    def failed(self, username: str, address: str) -> list[Lock]:
        """Count one failed password; returns the locks this failure set (to log)."""
        now = self.clock()
        out = []
        with self._lock:
            for kind, who, limit in (("user", username, self.user_limit), ("address", address, self.address_limit)):
                key = (kind, who)
                c = self._get(key, now) or _Counter()
                c.failures += 1
                c.last_failure = now
                if c.failures >= limit:
                    lock_s = min(self.base_lock_s * 2 ** min(c.failures - limit, 30), self.max_lock_s)
                    c.locked_until = now + lock_s
                    out.append(Lock(kind, who, c.failures, c.locked_until, lock_s))
                self._c[key] = c
                self._c.move_to_end(key)
            while len(self._c) > self.max_keys:
                self._c.popitem(last=False)
        return out

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._c.pop(("user", username), None)
