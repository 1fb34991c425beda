"""Progress repaints are coalesced: few calls, the latest value always shown."""

from __future__ import annotations

import time

import pytest

from napari_sgnet._qt.throttle import Throttle

pytestmark = pytest.mark.gui


def test_a_burst_is_coalesced_and_its_last_value_applied(qtbot):
    calls: list[tuple[int, int]] = []
    throttle = Throttle(lambda d, t: calls.append((d, t)), 100)
    for i in range(1, 201):  # 200 updates within far less than one interval
        throttle(i, 200)
    assert calls == [(1, 200)]  # the first at once
    qtbot.waitUntil(lambda: calls[-1] == (200, 200), timeout=2000)
    assert len(calls) == 2  # then only the latest of the burst


def test_updates_spread_over_time_are_rate_limited(qtbot):
    calls: list[int] = []
    throttle = Throttle(calls.append, 50)
    t0 = time.perf_counter()
    i = 0
    while time.perf_counter() - t0 < 0.5:
        i += 1
        throttle(i)
        qtbot.wait(5)
    qtbot.waitUntil(lambda: calls[-1] == i, timeout=2000)
    assert 3 <= len(calls) <= 16 < i  # ~10 in 0.5 s at 50 ms, from ~80 calls
    assert calls == sorted(calls)


def test_flush_applies_now_and_cancel_drops(qtbot):
    calls: list[int] = []
    throttle = Throttle(calls.append, 10_000)
    throttle(1)
    throttle(2)
    throttle.flush()
    assert calls == [1, 2]
    throttle(3)  # the interval restarted by the flush has been stopped: applied at once
    throttle(4)
    throttle.cancel()
    qtbot.wait(50)
    assert calls == [1, 2, 3]


def test_an_activity_bar_closed_while_napari_opens_it_does_not_stay_open(qtbot, monkeypatch):
    """napari processes events while adding a bar to its activity panel; if the work ends
    then (``close`` re-entered), the bar must not be left open for good."""
    import napari.utils

    from napari_sgnet._qt.review_controls import ActivityProgress

    activity = ActivityProgress("SGNet: test")
    made = []
    real = napari.utils.progress

    def reentrant(*args, **kwargs):
        activity.close()  # what a queued "work ended" does inside napari's processEvents
        bar = real(*args, **kwargs)
        made.append(bar)
        return bar

    monkeypatch.setattr(napari.utils, "progress", reentrant)
    activity.update(1, 10)
    assert activity.bar is None and made and made[0].n == 0
    monkeypatch.setattr(napari.utils, "progress", real)
    activity.update(2, 10)  # a later piece of work opens its own bar as usual
    assert activity.bar is not None and activity.bar.n == 2
    activity.close()
    assert activity.bar is None
