"""How long a shed caller should wait before it retries: estimated from the queue the server sees. Stdlib only
(the gateway and both hosts read it without torch).

The estimate is the time to answer the calls ahead: ``queued`` calls / the completion rate over the last
``window_s`` seconds, kept within [``floor_s``, ``ceiling_s``], then jittered by a factor drawn from [0.5, 1.5)
so that callers shed together do not return together. With no completion in the window (nothing measured yet, or
the server is stuck) the estimate is the ceiling. The gateway sends it as gRPC's ``grpc-retry-pushback-ms``
trailer (which a gRPC client's retry policy waits instead of its own backoff); REST hosts send it as
``Retry-After`` (whole seconds, rounded up).

Example:
    >>> import random
    >>> estimate = DrainEstimate(window_s=10.0, rng=random.Random(0))
    >>> for t in range(20):
    ...     estimate.completed(now=t / 2)  # 2 answers per second
    >>> 0.5 * 4 / 2 <= estimate.wait_s(queued=4, now=10.0) < 1.5 * 4 / 2
    True
"""
from __future__ import annotations

import math
import random
import time
from collections import deque

PUSHBACK_KEY = "grpc-retry-pushback-ms"  # gRFC A6: the server's retry delay, trailing metadata, milliseconds
RETRY_AFTER_HEADER = "Retry-After"  # RFC 9110: seconds


class DrainEstimate:
    """Completion times of the last ``window_s`` seconds -> the expected wait for a slot (see module doc)."""

    def __init__(self, window_s: float = 5.0, floor_s: float = 0.05, ceiling_s: float = 2.0,
                 rng: random.Random | None = None):
        if not 0 < floor_s <= ceiling_s or window_s <= 0:
            raise ValueError(f"need 0 < floor_s <= ceiling_s and window_s > 0, got {floor_s}, {ceiling_s}, "
                             f"{window_s}")
        self.window_s, self.floor_s, self.ceiling_s = window_s, floor_s, ceiling_s
        self._rng = rng or random.Random()
        self._done: deque[float] = deque()

    def completed(self, now: float | None = None) -> None:
        """One call was answered (at monotonic time ``now``)."""
        self._done.append(time.monotonic() if now is None else now)

    def rate(self, now: float | None = None) -> float:
        """Answers per second over the last window."""
        now = time.monotonic() if now is None else now
        while self._done and self._done[0] < now - self.window_s:
            self._done.popleft()
        return len(self._done) / self.window_s

    def wait_s(self, queued: int, now: float | None = None) -> float:
        """Jittered seconds until ``queued`` calls ahead are answered: [floor_s, ceiling_s] x [0.5, 1.5)."""
        rate = self.rate(now)
        expected = self.ceiling_s if rate == 0 else min(self.ceiling_s, max(self.floor_s, queued / rate))
        return jittered(expected, self._rng)

    def pushback_ms(self, queued: int) -> str:
        """The ``grpc-retry-pushback-ms`` value."""
        return str(round(self.wait_s(queued) * 1000))

    def retry_after(self, queued: int) -> str:
        """The ``Retry-After`` value: whole seconds, at least 1."""
        return str(max(1, math.ceil(self.wait_s(queued))))


def jittered(seconds: float, rng: random.Random | None = None) -> float:
    """``seconds`` times a factor drawn from [0.5, 1.5)."""
    return seconds * (rng or random).uniform(0.5, 1.5)
