"""LiveAdvertisement on its own: updates spaced by MIN_UPDATE_GAP_S, the latest state always
announced last, and a busy spell shorter than the gap merged into the idle after it.

The advertiser is a recorder standing in for engine.discovery.Advertiser (the layer below);
its first update waits at a gate, so what is set meanwhile is ordered without timing.
test_remote_netns.py proves the real advertisement across network namespaces.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

import engine.worker.remote as remote

GAP_S = 0.1
WAIT_S = 10.0  # only a broken advertisement waits this long


class Recorder:
    def __init__(self) -> None:
        self.record = SimpleNamespace(state="idle", paired=False)
        self.updates: list[tuple[float, dict]] = []
        self.changed = threading.Condition()
        self.gate = threading.Event()  # the first update waits here

    def update(self, **changes) -> None:
        with self.changed:
            self.updates.append((time.monotonic(), changes))
            self.changed.notify_all()
        assert self.gate.wait(WAIT_S)

    def wait_for(self, n: int) -> list[dict]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.updates) >= n, timeout=WAIT_S)
        return [c for _, c in self.updates]


@pytest.fixture
def live(monkeypatch):
    monkeypatch.setattr(remote, "MIN_UPDATE_GAP_S", GAP_S)
    rec = Recorder()
    yield remote.LiveAdvertisement(rec), rec
    rec.gate.set()


def test_updates_are_spaced_and_the_latest_state_goes_out_last(live):
    adv, rec = live
    adv.set(state="busy")
    assert rec.wait_for(1) == [{"state": "busy"}]  # the first update goes out at once
    adv.set(paired=True)
    adv.set(state="idle")
    rec.gate.set()
    assert rec.wait_for(2)[1] == {"paired": True, "state": "idle"}  # merged, none lost
    (t1, _), (t2, _) = rec.updates
    assert t2 - t1 >= GAP_S
    adv.set(state="idle")  # no change: nothing to announce
    time.sleep(2 * GAP_S)
    assert len(rec.updates) == 2


def test_a_busy_spell_shorter_than_the_gap_is_merged_into_the_idle_after_it(live):
    adv, rec = live
    adv.set(paired=True)
    rec.wait_for(1)
    adv.set(state="busy")  # within the gap after the last update: it waits...
    adv.set(state="idle")  # ...and is over before the gap ends: browsers never see it
    rec.gate.set()
    rec.wait_for(2)
    time.sleep(2 * GAP_S)
    assert [c for _, c in rec.updates] == [{"paired": True}, {"state": "idle"}]
