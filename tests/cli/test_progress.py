"""The terminal view: progress lines, and a recovery told once, not once per channel."""

from __future__ import annotations

import io
import logging

from engine.cli.progress import TerminalProgress
from engine.events import LogEvent, MetricEvent, ProgressEvent, StateEvent


def test_a_message_sent_as_a_log_and_a_state_event_is_shown_once():
    out = io.StringIO()
    view = TerminalProgress(out)
    msg = "worker 127.0.0.1:5 lost during step 3; group re-formed with 2 workers"
    view(StateEvent("recovering", "worker 127.0.0.1:5 lost during step 3", "/r"))
    view(LogEvent("warning", msg))
    view(StateEvent("running", msg, "/r", {"recovered": True}))
    view(StateEvent("finished", "step 9 of 9", "/r"))
    lines = out.getvalue().splitlines()
    assert lines == [
        "recovering: worker 127.0.0.1:5 lost during step 3",
        f"[warning] {msg}",
        "finished: step 9 of 9",
    ]


def test_progress_lines_carry_loss_and_tokens_per_second():
    out = io.StringIO()
    view = TerminalProgress(out)
    view(MetricEvent(step=4, values={"train_loss": 1.25, "tokens_per_s": 1234.0}))
    view(ProgressEvent(step=4, total_steps=4, elapsed_s=2.0, eta_s=0.0))
    view(MetricEvent(step=4, values={"val_loss": 1.5}, kind="val"))
    text = out.getvalue()
    assert "4/4" in text and "loss 1.2500" in text and "1,234 tok/s" in text
    assert "step 4: val_loss 1.5000" in text


def test_the_console_leaves_out_records_already_shown_as_events():
    from engine.cli.main import console_handler
    from engine.runtime.coordinator import SHOWN

    stream = io.StringIO()
    handler = console_handler(verbose=False)
    handler.setStream(stream)
    log = logging.getLogger("test.orchard.console")
    log.addHandler(handler)
    try:
        log.warning("shown as an event", extra=SHOWN)
        log.warning("only in the log")
        log.info("too quiet for the terminal")
    finally:
        log.removeHandler(handler)
    assert stream.getvalue().splitlines() == ["WARNING test.orchard.console: only in the log"]
