"""A coordinator in its own process (run inside a network namespace by the remote-worker tests).

python -m tests.worker.remote_coordinator --service-type T --out DIR
    browses T and prints one JSON line per discovery event ({"event": change, "peer": {...}});
    prints {"ready": true}; then reads commands from stdin, one JSON line of reply each:
      pair ADDRESS CODE FINGERPRINT   -> {"pair": ADDRESS, "rc": int}
      connect ADDRESS                 -> {"connect": ADDRESS, "error": "" or the refusal}
      train MODE STEPS ADDR1,ADDR2 [HOLD]
                                      -> {"train": MODE, "status": ..., "losses": [...], "error": ...}
          with HOLD, the run prints {"held": HOLD} after that step and waits for `go` (its
          workers stay busy meanwhile, however fast the steps are)
      go                              -> lets a held run go on (no reply)
The trust folder is $ORCHARD_HOME/trust, as for `orchard pair` and `orchard train`.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

_lock = threading.Lock()


def say(obj: dict) -> None:
    with _lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def connect(address: str) -> str:
    from engine.rpc.paired_client import connect_paired
    from engine.trust import open_trust_home

    try:
        client, _ = connect_paired(address, open_trust_home(), timeout_s=10.0)
    except Exception as e:  # noqa: BLE001 - the test reads the refusal's message
        return f"{type(e).__name__}: {e}"
    client.close()
    return ""


HOLD_LIMIT_S = 120.0  # the test sends "go" within seconds; never wait forever


def train(
    mode: str, steps: int, hosts: list[str], out: Path, hold: int, go: threading.Event
) -> dict:
    from engine.events import MetricEvent
    from engine.runtime import start_run
    from engine.train.metrics import read_metrics
    from tests.runtime.helpers import tiny_job

    def sink(event: object) -> None:
        if isinstance(event, MetricEvent) and event.kind == "train" and event.step == hold:
            say({"held": hold})
            go.wait(HOLD_LIMIT_S)

    job = tiny_job(
        out, steps, **{"dist.mode": mode, "dist.workers": len(hosts), "run.name": mode}
    ).with_overrides([f"dist.hosts={json.dumps(hosts)}"])
    result = start_run(job, sink, data_dir=out / "cache").wait(timeout=300)
    if result is None:
        return {"train": mode, "status": "timeout", "losses": [], "error": ""}
    losses = []
    if result.run_dir is not None and (Path(result.run_dir) / "metrics.jsonl").exists():
        rows = read_metrics(Path(result.run_dir) / "metrics.jsonl")
        rows = sorted((r for r in rows if "train_loss" in r), key=lambda r: r["step"])
        losses = [r["train_loss"] for r in rows]
    return {"train": mode, "status": result.status, "losses": losses, "error": result.message}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--service-type", required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    from engine.cli.pair_cmd import pair_main
    from engine.discovery import Browser

    browser = Browser(
        on_event=lambda e: say({"event": e.change, "peer": e.peer}),
        service_type=args.service_type,
        check_interval_s=1.0,
        retry_lost_s=2.0,
    )
    browser.start()
    say({"ready": True})
    go = threading.Event()
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["go"]:
            go.set()
            continue
        if words[:1] == ["pair"]:
            say({"pair": words[1], "rc": pair_main(words[1], words[2], words[3])})
        elif words[:1] == ["connect"]:
            say({"connect": words[1], "error": connect(words[1])})
        elif words[:1] == ["train"]:
            go.clear()
            hold = int(words[4]) if len(words) > 4 else -1
            run = (words[1], int(words[2]), words[3].split(","), args.out, hold, go)
            # on a thread: a held run waits for "go", read by this loop
            threading.Thread(target=lambda a: say(train(*a)), args=(run,), daemon=True).start()
    browser.close()


if __name__ == "__main__":
    main()
