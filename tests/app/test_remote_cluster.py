"""Pair and Probe a real `orchard worker` from the Cluster page: loopback, TLS, real processes.

The app's trust folder is a temp dir (``ORCHARD_HOME``, read by engine.trust.open_trust_home
at pairing time); the worker keeps its own. Every failure must reach the banner as one
readable line, never a traceback.
"""

from __future__ import annotations

import pytest

from engine.trust import open_trust_home
from tests.worker.remote_procs import start_agent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]  # a worker agent per test: ~5-15 s


@pytest.fixture
def app_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHARD_HOME", str(tmp_path / "app-home"))
    monkeypatch.delenv("ORCHARD_WORKER_TOKEN", raising=False)
    return tmp_path / "app-home"


@pytest.fixture
def agent(tmp_path):
    """`python -m engine.worker` on 127.0.0.1 with TLS; its pairing code read from its terminal."""
    proc, agent = start_agent(
        tmp_path / "worker-home", host="127.0.0.1", extra=("--no-warm-spare",)
    )  # no job here
    yield agent
    proc.close()


class Messages:
    """What the Cluster page said, in order."""

    def __init__(self, page):
        self.seen: list[tuple[str, str]] = []
        page.message.connect(lambda text, level: self.seen.append((text, level)))

    def wait(self, qtbot, match, timeout_ms: int = 60_000) -> tuple[str, str]:
        start = len(self.seen)
        qtbot.waitUntil(lambda: any(match(*m) for m in self.seen[start:]), timeout=timeout_ms)
        return next(m for m in self.seen[start:] if match(*m))


def errors(text: str, level: str) -> bool:
    return level == "error"


def listed(window, agent):
    """Add the agent by address (Bonjour is off in tests) and select its row."""
    page = window.cluster_page
    window.add_worker("127.0.0.1", agent.port)
    page.table.selectRow(1)
    worker = page.selected()
    assert worker is not None and worker.address == f"127.0.0.1:{agent.port}"
    return page, worker


def test_pair_with_the_code_then_probe_a_real_worker(window, qtbot, app_home, agent) -> None:
    page, worker = listed(window, agent)
    said = Messages(page)
    assert not worker.paired and "Pair with this Mac first" in page.probe_button.toolTip()

    # Probing before pairing: the paired channel refuses, and the banner says what to do.
    page.probe_button.click()
    text, _ = said.wait(qtbot, errors)
    assert "is not paired with this Mac yet" in text and "press Pair" in text, text
    assert window.banner.text() == text and "Traceback" not in text
    assert page.probe_button.isEnabled()

    wrong = "0000-0000" if agent.code != "0000-0000" else "1111-1111"
    page.pair_with(worker, wrong)
    text, _ = said.wait(qtbot, errors)
    assert text.startswith("Pairing failed:") and "check the code" in text, text
    assert window.banner.text() == text and "Traceback" not in text
    assert not page.selected().paired and open_trust_home().workers().all() == []

    qtbot.wait(2500)  # the worker takes no other code for 1 s after a wrong one
    page.pair_with(worker, agent.code)
    said.wait(qtbot, lambda t, lvl: t.startswith("Paired with"))
    assert [p.peer_id for p in open_trust_home().workers().all()] == [agent.worker_id]
    assert page.table.item(1, 6).text() == "yes"
    assert "over the paired channel" in page.probe_button.toolTip()

    page.probe_button.click()
    assert not page.probe_button.isEnabled()  # one probe at a time
    text, level = said.wait(qtbot, lambda t, lvl: "GFLOP/s" in t or lvl == "error", 90_000)
    assert level == "info" and "from this machine" in text, text
    gflops = float(text.split(" GFLOP/s")[0].rsplit(" ", 1)[1])
    rtt_ms = float(text.split("round trip ")[1].split(" ms")[0])
    assert gflops > 0 and rtt_ms > 0, text
    assert window.banner.text() == text and page.probe_button.isEnabled()


def test_a_paired_worker_that_is_gone_is_a_readable_error(window, qtbot, app_home, agent) -> None:
    page, worker = listed(window, agent)
    said = Messages(page)
    page.pair_with(worker, agent.code)
    said.wait(qtbot, lambda t, lvl: t.startswith("Paired with"))

    agent.proc.close()  # the Mac went to sleep, or its worker was stopped
    page.probe(page.selected())
    text, _ = said.wait(qtbot, errors)
    assert text.startswith(f"Probe of {worker.name} failed: cannot reach the worker at"), text
    assert "still running" in text and "Traceback" not in text
    assert window.banner.text() == text and page.probe_button.isEnabled()
