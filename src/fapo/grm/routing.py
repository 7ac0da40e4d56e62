"""Endpoint health and load for the GenRM client: least-outstanding routing and circuit breakers.

Owns, per endpoint: the number of requests in flight, a circuit breaker (closed → open after
`breaker_failures` consecutive failures → one probe after `breaker_cooldown` seconds → closed on
success, open again on failure), and counters plus a window of recent latencies for metrics.
Plain synchronous code, driven by one event loop (no locks). Knows nothing about HTTP, prompts or
verdicts: the client says what happened, the router says where to go next.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from fapo.metrics import percentile

LATENCY_WINDOW = 1024
"""Latency percentiles are computed over each endpoint's most recent LATENCY_WINDOW requests."""


@dataclass
class EndpointState:
    """Mutable bookkeeping for one endpoint (owned by `Router`; read it, do not write it)."""

    in_flight: int = 0
    requests: int = 0
    errors: int = 0
    consecutive_failures: int = 0
    open_since: float | None = None
    """When the breaker opened (monotonic seconds); None while closed."""
    probing: bool = False
    """True while the one probe request of an open breaker is in flight."""
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))


@dataclass(frozen=True)
class Pick:
    """Where one attempt goes: the endpoint index, and whether it is a breaker probe."""

    index: int
    probe: bool


class Router:
    """Least-outstanding-requests routing over endpoints whose breaker lets traffic through.

    `pick` chooses among available endpoints the one with the fewest requests in flight,
    preferring endpoints not in `exclude` (those this request already tried); ties go
    round-robin. An open breaker becomes available for exactly one probe once its cooldown has
    passed. `pick` returns None when no endpoint is available: the caller waits (`next_probe_in`).
    """

    def __init__(
        self,
        num_endpoints: int,
        breaker_failures: int,
        breaker_cooldown: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if num_endpoints < 1:
            raise ValueError("a router needs at least one endpoint")
        self.states = [EndpointState() for _ in range(num_endpoints)]
        self._breaker_failures = breaker_failures
        self._breaker_cooldown = breaker_cooldown
        self._clock = clock
        self._next = 0  # round-robin start for tie-breaking

    def pick(self, exclude: Collection[int] = ()) -> Pick | None:
        """Choose an endpoint for the next attempt and count it in flight; None if none is available."""
        now = self._clock()
        n = len(self.states)
        start = self._next
        self._next = (start + 1) % n
        best, best_key, best_probe = -1, (2, 0), False
        for k in range(n):
            i = (start + k) % n
            s = self.states[i]
            probe = s.open_since is not None
            if probe and (s.probing or now - s.open_since < self._breaker_cooldown):
                continue
            key = (1 if i in exclude else 0, s.in_flight)
            if key < best_key:
                best, best_key, best_probe = i, key, probe
        if best < 0:
            return None
        s = self.states[best]
        s.in_flight += 1
        s.requests += 1
        if best_probe:
            s.probing = True
        return Pick(best, best_probe)

    def succeed(self, pick: Pick, latency_s: float) -> None:
        """The endpoint answered (any HTTP response that shows it is alive and serving)."""
        s = self.states[pick.index]
        s.in_flight -= 1
        s.latencies.append(latency_s)
        s.consecutive_failures = 0
        s.open_since = None
        if pick.probe:
            s.probing = False

    def fail(self, pick: Pick, latency_s: float, breaker: bool = True) -> None:
        """The attempt failed; `breaker=False` for failures that say nothing about the endpoint's health."""
        s = self.states[pick.index]
        s.in_flight -= 1
        s.errors += 1
        s.latencies.append(latency_s)
        if pick.probe:
            s.probing = False
            s.open_since = self._clock()  # probe failed: stay open for another cooldown
            return
        if not breaker:
            return
        s.consecutive_failures += 1
        if s.open_since is None and s.consecutive_failures >= self._breaker_failures:
            s.open_since = self._clock()

    def release(self, pick: Pick) -> None:
        """The attempt ended without an outcome (cancelled): uncount it, change no health state."""
        s = self.states[pick.index]
        s.in_flight -= 1
        if pick.probe:
            s.probing = False

    def healthy(self, index: int) -> bool:
        """Whether the endpoint's breaker is closed."""
        return self.states[index].open_since is None

    def next_probe_in(self) -> float | None:
        """Seconds until `pick` may find an endpoint (0: now); None while every open breaker's probe is
        in flight (only its outcome changes that)."""
        now = self._clock()
        waits = [0.0 if s.open_since is None else max(0.0, self._breaker_cooldown - (now - s.open_since))
                 for s in self.states if not s.probing]
        return min(waits) if waits else None

    def describe_unavailable(self) -> str:
        """Why `pick` found nothing, for the error message of a fail-fast result."""
        now = self._clock()
        waits = [
            max(0.0, self._breaker_cooldown - (now - s.open_since))
            for s in self.states
            if s.open_since is not None and not s.probing
        ]
        probing = sum(1 for s in self.states if s.probing)
        msg = f"no healthy endpoint: all {len(self.states)} circuit breakers are open"
        if probing:
            msg += f", {probing} probe(s) in flight"
        if waits:
            msg += f", next probe in {min(waits):.1f} s"
        return msg

    def metrics(self) -> dict[str, float]:
        """Per-endpoint metrics, keys `grm/endpoint/<i>/...`."""
        out: dict[str, float] = {}
        for i, s in enumerate(self.states):
            p50, p95 = percentiles(s.latencies, (0.50, 0.95))
            prefix = f"grm/endpoint/{i}/"
            out[prefix + "requests"] = float(s.requests)
            out[prefix + "errors"] = float(s.errors)
            out[prefix + "in_flight"] = float(s.in_flight)
            out[prefix + "healthy"] = 1.0 if s.open_since is None else 0.0
            out[prefix + "latency_p50"] = p50
            out[prefix + "latency_p95"] = p95
        return out


def percentiles(values: Collection[float], qs: tuple[float, ...]) -> tuple[float, ...]:
    """`fapo.metrics.percentile` for each q (NaN each when empty: the empty-case convention)."""
    return tuple(percentile(values, q) for q in qs)
