"""Cycles holding Qt objects are collected on the GUI thread, never in a pool thread."""

from __future__ import annotations

import gc
import threading

from PySide6.QtCore import QObject, QThread


class Node(QObject):
    """A QObject in a reference cycle: only the cycle collector can free it."""

    def __init__(self, seen: list[QThread]) -> None:
        super().__init__()
        self.me = self
        self.destroyed.connect(lambda *_: seen.append(QThread.currentThread()))


def test_garbage_is_collected_by_the_timer_on_the_gui_thread(gui_thread_collector, qtbot):
    assert not gc.isenabled()  # the fixture is the app's collector
    seen: list[QThread] = []
    Node(seen)  # garbage at once: a cycle
    gc.collect()  # what came before
    Node(seen)

    def allocate() -> None:  # a pool thread allocating far past every threshold
        junk = [[i] for i in range(200_000)]
        for a, b in zip(junk, junk[1:], strict=False):
            a.append(b)
            b.append(a)

    t = threading.Thread(target=allocate)
    t.start()
    t.join()
    assert seen[1:] == []  # nothing collected there
    assert gui_thread_collector.collect_due() >= 0  # the thresholds passed: due
    assert seen[-1] is QThread.currentThread()
    # the timer does it unasked, on its own: generation 0 passes its threshold, and is
    # collected again within a few ticks
    kept = [[i] for i in range(5_000)]
    assert gc.get_count()[0] > gc.get_threshold()[0]
    qtbot.waitUntil(lambda: gc.get_count()[0] < gc.get_threshold()[0], timeout=5_000)
    assert kept


def test_closing_gives_collection_back(qapp):
    from app.gc_gui_thread import GuiThreadCollector

    gc.enable()
    c = GuiThreadCollector()
    assert not gc.isenabled()
    c.close()
    assert gc.isenabled()
