"""Peer events from another thread reach the cluster table on the GUI thread."""

from __future__ import annotations

import threading

from PySide6.QtCore import Qt

from engine.discovery import PeerRecord
from engine.events import PeerEvent
from engine.trust import new_code


def peer(host: str, port: int, **fields) -> dict:
    return PeerRecord(
        worker_id=f"id-{host}",
        host=host,
        addresses=("10.0.0.5",),
        port=port,
        chip="Apple M2 Ultra",
        memory_bytes=192 * 2**30,
        service_name=f"{host}._orchard._tcp.local.",
        **fields,
    ).to_dict()


def names(page) -> list[str]:
    return [page.table.item(r, 1).text() for r in range(page.table.rowCount())]


def test_local_machine_is_always_listed(window) -> None:
    page = window.cluster_page
    assert page.table.rowCount() == 1
    assert names(page)[0].endswith("(this machine)")
    assert page.table.item(0, 0).checkState() == Qt.CheckState.Checked
    assert "this machine" in window.cluster_label.text()


def test_peer_events_from_a_thread_update_the_table(window, qtbot) -> None:
    page, sink = window.cluster_page, window.bridge.sink
    added = peer("studio", 50051)
    with qtbot.waitSignal(window.cluster.changed, timeout=5_000):
        threading.Thread(target=sink, args=(PeerEvent("added", added),)).start()
    assert names(page) == [names(page)[0], "studio"]
    row = [page.table.item(1, c).text() for c in range(page.table.columnCount())]
    assert row[2] == "10.0.0.5:50051" and row[3] == "Apple M2 Ultra" and row[4] == "192.0 GiB"
    assert row[5] == "idle" and row[6] == "no"
    assert "1 Mac" in window.cluster_label.text()

    with qtbot.waitSignal(window.cluster.changed, timeout=5_000):
        threading.Thread(
            target=sink, args=(PeerEvent("updated", peer("studio", 50051, state="busy")),)
        ).start()
    assert page.table.item(1, 5).text() == "busy"

    # Ticking "Use" puts it in the job; the memory table then shows that Mac.
    page.table.item(1, 0).setCheckState(Qt.CheckState.Checked)
    assert window.job.spec.dist.hosts == ["10.0.0.5:50051"]
    window.model_page.update_estimate()  # the preflight's fits, from a pool thread
    memory = window.model_page.memory
    qtbot.waitUntil(lambda: memory.item(0, 0) is not None and memory.item(0, 0).text() == "studio")
    assert page.table.item(0, 0).checkState() == Qt.CheckState.Unchecked  # local processes not used

    with qtbot.waitSignal(window.cluster.changed, timeout=5_000):
        threading.Thread(target=sink, args=(PeerEvent("removed", added),)).start()
    assert page.table.rowCount() == 1


def test_add_by_address_and_bad_address(window, qtbot) -> None:
    page = window.cluster_page
    page.address.setText("192.168.1.20:50051")
    page._add()
    assert "192.168.1.20:50051" in [
        page.table.item(r, 2).text() for r in range(page.table.rowCount())
    ]
    with qtbot.waitSignal(page.message, timeout=2_000) as blocker:
        page.address.setText("no-port-here")
        page._add()
    assert "host:port" in blocker.args[0]
    # Another Mac can be probed once paired; until then the tooltip says to pair first.
    page.table.selectRow(1)
    assert page.pair_button.isEnabled() and page.probe_button.isEnabled()
    assert "Pair with this Mac first" in page.probe_button.toolTip()


def test_pairing_an_unreachable_worker_is_a_readable_error(
    window, qtbot, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("ORCHARD_HOME", str(tmp_path / "home"))  # the trust folder of this test
    page = window.cluster_page
    worker = window.cluster.add_manual("127.0.0.1:9")  # nothing listens on the discard port
    page.table.selectRow(1)
    assert page.pair_button.isEnabled()
    with qtbot.waitSignal(
        page.message, timeout=60_000, check_params_cb=lambda t, lvl: lvl == "error"
    ) as b:
        page.pair_with(worker, new_code())  # well formed, so the engine tries the network
    assert b.args[0].startswith("Pairing failed:") and "127.0.0.1" in b.args[0]
    assert "Traceback" not in b.args[0]
    assert not worker.paired and page.pair_button.isEnabled()


def test_probe_measures_this_machine_with_a_real_worker(window, qtbot) -> None:
    page = window.cluster_page
    assert not page.probe_button.isEnabled()  # nothing selected yet
    page.table.selectRow(0)
    assert page.selected() is not None and page.selected().local
    assert page.probe_button.isEnabled()
    messages: list[tuple[str, str]] = []
    page.message.connect(lambda text, level: messages.append((text, level)))
    page.probe_button.click()
    assert not page.probe_button.isEnabled()  # one probe at a time
    qtbot.waitUntil(lambda: len(messages) >= 2, timeout=90_000)
    text, level = messages[-1]
    assert level == "info" and "GFLOP/s" in text and "GiB free" in text, messages
    gflops = float(text.split(" GFLOP/s")[0].rsplit(" ", 1)[1])
    assert gflops > 0, text
    assert page.probe_button.isEnabled()


def test_this_machine_has_its_facts_and_the_network_an_honest_empty_state(window, qtbot) -> None:
    page = window.cluster_page
    window.go_to(page)
    facts = {k: v.text() for k, v in page.facts.items()}
    assert facts["memory"].endswith("GiB") and facts["chip"] and facts["cores"].isdigit()
    assert "MLX" in facts["backend"]
    # One row is one row high: no big empty table.
    assert page.table.height() < 4 * page.table.verticalHeader().defaultSectionSize()
    assert page.empty.isVisible() and "No other Macs" not in page.empty.text()  # discovery off
    assert "Not looking for other Macs" in page.empty.text()
    page.set_discovery(True)
    assert "No other Macs found yet" in page.empty.text()
    with qtbot.waitSignal(window.cluster.changed, timeout=5_000):
        window.bridge.sink(PeerEvent("added", peer("studio", 50051)))
    assert not page.empty.isVisible() and page.table.rowCount() == 2
