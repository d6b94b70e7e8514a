"""Lag-driven consumer count of the process job (pipeline.process.scaling.desired_consumers):
pure decisions on a simulated clock, then the supervisor's loop starting and stopping fake actors."""

from __future__ import annotations

import pytest

from pipeline.process.scaling import ScalePolicy, ScaleState, ceiling, desired_consumers
from schemas.config import parse_config
from schemas.errors import ConfigError

POLICY = ScalePolicy(min_consumers=2, max_consumers=5, lag_per_consumer=100, up_after_s=60, down_after_s=300)


def run(state: ScaleState, current: int, lags: list[tuple[float, int | None]]) -> list[tuple[float, int, str]]:
    """Feed (t, lag) readings; apply each decision as the supervisor does. Returns the changes."""
    changes = []
    for t, lag in lags:
        n, why = desired_consumers(current, lag, t, state)
        if n != current:
            changes.append((t, n, why))
            current = n
    return changes


def every(t0: float, t1: float, lag: int | None, step: float = 15) -> list[tuple[float, int | None]]:
    out, t = [], t0
    while t < t1:
        out.append((t, lag))
        t += step
    return out


def test_defaults_keep_a_fixed_count():
    cfg = parse_config({"ray": {"consumers": 3}})
    p = ScalePolicy.of(cfg.ray)
    assert (p.min_consumers, p.max_consumers) == (3, 3) and p.fixed
    state = ScaleState(p)
    assert run(state, 3, every(0, 3600, 10**6)) == [] and run(state, 3, every(3600, 9000, 0)) == []


def test_config_bounds_must_hold_the_starting_count():
    cfg = parse_config({"ray": {"consumers": 2, "autoscale": {"min_consumers": 1, "max_consumers": 8}}})
    p = ScalePolicy.of(cfg.ray)
    assert (p.min_consumers, p.max_consumers, p.fixed) == (1, 8, False)
    with pytest.raises(ConfigError, match=r"ray.autoscale: ray.consumers \(9\) .* \[min_consumers 1, max_consumers 8\]"):
        parse_config({"ray": {"consumers": 9, "autoscale": {"min_consumers": 1, "max_consumers": 8}}})
    with pytest.raises(ConfigError, match="min_consumers 4, max_consumers 2"):
        parse_config({"ray": {"consumers": 3, "autoscale": {"min_consumers": 4, "max_consumers": 2}}})
    parse_config({"ray": {"consumers": 0, "autoscale": {"min_consumers": 2}}})  # local mode: not used


def test_a_scale_event_up_one_step_per_window_then_down_after_the_longer_window():
    state = ScaleState(POLICY, partitions=12)
    # quiet: 2 consumers, lag 50 (between the thresholds: down needs < 50 x 0.5 ... = 50 for 2 -> 1, but min is 2)
    assert run(state, 2, every(0, 600, 50)) == []
    # a burst: lag 1000 (> 2 x 100). Nothing before the window has passed ...
    assert run(state, 2, every(600, 660, 1000)) == []
    # ... then one step per window, and never above max_consumers (5)
    changes = run(state, 2, every(600, 1500, 1000))
    assert [(t, n) for t, n, _ in changes] == [(660, 3), (720, 4), (780, 5)]
    assert changes[0][2] == "up: lag 1000 > 2 x 100 for 60 s"
    n, why = desired_consumers(5, 1000, 1500, state)
    assert n == 5 and why.startswith("hold: lag 1000 > 500 but at the ceiling (5)")
    # the lag falls to 10: nothing for the longer window, then one step down per window ...
    changes = run(state, 5, every(1500, 1500 + 300, 10))
    assert changes == []
    changes = run(state, 5, every(1500, 4000, 10))
    assert [(t, n) for t, n, _ in changes] == [(1800, 4), (2100, 3), (2400, 2)]
    assert changes[0][2] == "down: lag 10 < 200 for 300 s"
    # ... and never below min_consumers (2)
    assert run(state, 2, every(4000, 9000, 0)) == []
    assert desired_consumers(2, 0, 9000, state) == (2, "hold: lag 0 within [50, 200]")


def test_the_window_restarts_when_the_condition_breaks():
    state = ScaleState(POLICY)
    lags = every(0, 45, 1000) + [(45, 150)] + every(60, 100, 1000)  # a dip at 45 s
    assert run(state, 2, lags) == []  # 60 s of high lag never held continuously
    assert run(state, 2, [(120, 1000)])[0][:2] == (120, 3)  # 60 s since 60


def test_between_the_thresholds_nothing_moves():
    state = ScaleState(POLICY)
    # 4 consumers: up above 400, down below 3 x 100 x 0.5 = 150
    assert run(state, 4, every(0, 5000, 150)) == [] and run(state, 4, every(5000, 9000, 400)) == []


def test_never_above_the_partitions_and_out_of_bounds_is_corrected_at_once():
    state = ScaleState(POLICY, partitions=3)
    assert ceiling(state) == 3
    changes = run(state, 2, every(0, 600, 10**6))
    assert [(t, n) for t, n, _ in changes] == [(60, 3)]  # not 4 and 5: 3 partitions
    assert desired_consumers(3, 10**6, 700, state)[1].startswith("hold: lag 1000000 > 300 but at the ceiling (3)")
    assert desired_consumers(4, 0, 800, state) == (3, "bounds: 4 outside [min_consumers 2, the raw topic's 3 partitions]")
    assert desired_consumers(1, 0, 900, state) == (2, "bounds: 1 outside [min_consumers 2, the raw topic's 3 partitions]")
    assert desired_consumers(1, 0, 900, ScaleState(POLICY)) == (2, "bounds: 1 outside [min_consumers 2, max_consumers 5]")
    # fewer partitions than min_consumers: the minimum the operator asked for wins
    assert ceiling(ScaleState(POLICY, partitions=1)) == 2


def test_an_unknown_lag_holds_and_restarts_the_windows():
    state = ScaleState(POLICY)
    lags = every(0, 45, 1000) + [(45, None)] + every(60, 100, 1000)
    assert run(state, 2, lags) == []
    assert desired_consumers(2, None, 200, state) == (2, "hold: lag unknown")


def test_zero_windows_step_at_every_reading_still_one_at_a_time():
    state = ScaleState(ScalePolicy(1, 4, 10, 0, 0))
    assert [n for _, n, _ in run(state, 1, every(0, 60, 1000))] == [2, 3, 4]
    assert [n for _, n, _ in run(state, 4, every(60, 120, 0))] == [3, 2, 1]


# ---------------------------------------------------------------- the supervisor's loop, Ray faked

class Ref:
    def __init__(self, value: object = None, exc: BaseException | None = None) -> None:
        self.value, self.exc = value, exc

    def hex(self) -> str:
        return f"{id(self):x}"


class Call:
    def __init__(self, fn) -> None:
        self.fn, self.calls = fn, 0

    def remote(self) -> Ref:
        self.calls += 1
        return self.fn()


class Actor:
    """A consumer actor: answers snapshots (ready once consuming), stops cleanly."""

    def __init__(self, index: int, *, fails: str | None = None) -> None:
        self.index, self.killed = index, False
        base = {"index": index, "ready": True, "produced": 0, "exit_code": None, "error": None,
                "phase": "running", "families": []}
        if fails:
            base = {**base, "ready": False, "phase": "starting", "exit_code": 1, "error": fails}
        self.snapshot = Call(lambda: Ref(dict(base)))
        self.stop = Call(lambda: Ref({**base, "exit_code": 0, "produced": 3}))


class Ray:
    def __init__(self) -> None:
        self.killed: list[Actor] = []

    def wait(self, refs, num_returns, timeout):
        return list(refs), []

    def get(self, ref, timeout=None):
        if ref.exc is not None:
            raise ref.exc
        return ref.value

    def kill(self, actor) -> None:
        actor.killed = True
        self.killed.append(actor)


def test_the_supervisor_starts_one_more_on_lag_and_stops_the_highest_cleanly():
    import threading

    from pipeline.process.consumers import ConsumerScaler, JobMetrics, _watch

    lags = iter([(50, 8), (50, 8), (0, 8), (0, 8)])
    readings: list[int | None] = []
    started: list[int] = []
    stop = threading.Event()

    def read_lag():
        try:
            lag = next(lags)
        except StopIteration:
            stop.set()
            return None, None
        readings.append(lag[0])
        return lag

    def start(i: int) -> Actor:
        started.append(i)
        return Actor(i)

    ray = Ray()
    actors = {0: Actor(0), 1: Actor(1)}
    first = dict(actors)
    scaler = ConsumerScaler(ScalePolicy(1, 4, 10, 0, 0), read_lag, start, check_every_s=0)
    jm = JobMetrics(2)
    seen: list[tuple[int, int]] = []
    orig = jm.set_consumers

    def record(running: int, desired: int, lag: int | None) -> None:
        seen.append((running, desired))
        orig(running, desired, lag)

    jm.set_consumers = record  # type: ignore[method-assign]
    assert _watch(ray, actors, jm, stop, 0.0, 0.5, 60.0, scaler=scaler) is None
    # lag 50 > 2 x 10: up to 3, then 4 (one per reading); lag 0: down to 3, then 2
    assert started == [2, 3] and [r for r, _ in seen[:4]] == [3, 4, 3, 2]
    assert set(actors) == {0, 1} and actors == first  # the highest ones went, the first two stay
    stopped = [a for a in ray.killed]
    assert sorted(a.index for a in stopped) == [2, 3] and all(a.stop.calls == 1 for a in stopped)
    assert scaler.stopping == {} and jm.merged.desired == 2


def test_a_consumer_the_scaler_added_that_never_consumed_is_dropped_not_fatal():
    import threading

    from pipeline.process.consumers import ConsumerScaler, JobMetrics, _watch

    stop = threading.Event()
    reads = iter([(500, 8)])

    def read_lag():
        try:
            return next(reads)
        except StopIteration:
            stop.set()
            return None, None

    ray = Ray()
    actors = {0: Actor(0)}
    scaler = ConsumerScaler(ScalePolicy(1, 4, 10, 0, 0), read_lag,
                            lambda i: Actor(i, fails="process actors failed to start: no GPU"), 0)
    assert _watch(ray, actors, JobMetrics(1), stop, 0.0, 0.5, 60.0, scaler=scaler) is None
    assert set(actors) == {0} and [a.index for a in ray.killed] == [1]
    # one of the consumers the job started with failing still fails the job
    broken = {0: Actor(0, fails="kafka: broker unreachable")}
    scaler = ConsumerScaler(ScalePolicy(1, 4, 10, 0, 0), lambda: (None, None), lambda i: Actor(i), 0)
    assert _watch(Ray(), broken, JobMetrics(1), threading.Event(), 0.0, 0.5, 60.0, scaler=scaler) == \
        "consumer 0 failed: kafka: broker unreachable"
