"""A discovery peer in its own process (run inside a network namespace by the netns tests).

python -m tests.discovery.peer_proc advertise --id w1 --port 5000 --service-type T --ttl 4
    prints "ready"; reads "state busy" / "stop" lines from stdin.
python -m tests.discovery.peer_proc browse --service-type T
    prints "ready", then one JSON line per PeerEvent until stdin closes.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

from engine.discovery import Advertiser, Browser, PeerRecord


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def advertise(args: argparse.Namespace) -> None:
    info = PeerRecord(
        worker_id=args.id, host=f"host-{args.id}", chip="Apple M2 Ultra", memory_bytes=192 << 30,
        mlx_version="0.32.0", orchard_version="0.1.0", fingerprint=args.fp,
    )  # fmt: skip
    adv = Advertiser(info, args.port, service_type=args.service_type, ttl_s=args.ttl)
    adv.start()
    _say("ready")
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["state"]:
            adv.update(state=words[1])
            _say("updated")
        elif words[:1] == ["stop"]:
            break
    adv.stop()
    _say("stopped")


def browse(args: argparse.Namespace) -> None:
    lock = threading.Lock()

    def emit(event: object) -> None:
        with lock:
            _say(json.dumps({"change": event.change, "peer": event.peer}))  # type: ignore[attr-defined]

    browser = Browser(
        on_event=emit, service_type=args.service_type, check_interval_s=1.0, retry_lost_s=2.0
    )
    browser.start()
    _say("ready")
    sys.stdin.read()  # until the test closes our stdin
    browser.close()


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("advertise")
    a.add_argument("--id", required=True)
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--fp", default="ab" * 32)
    a.add_argument("--ttl", type=int, default=60)
    a.add_argument("--service-type", required=True)
    b = sub.add_parser("browse")
    b.add_argument("--service-type", required=True)
    args = p.parse_args()
    advertise(args) if args.cmd == "advertise" else browse(args)


if __name__ == "__main__":
    main()
