"""A coordinator process driving one paired agent, for tests that kill it or cut it off.

python -m tests.worker.orphan_coordinator ADDRESS OUT
    reads commands from stdin and prints one JSON line for each:
      pair CODE            -> {"pair": rc}                       (pair_main with the code)
      setup RUN [SILENT]   -> {"job_id": ...}   a job of one worker; with SILENT (host:port of
                              a socket that never answers) rank 0 of two, so Steps wait there
      step N               -> {"step": N, "ok": bool, "job_lost": bool, "code": .., "details": ..}
      describe             -> {"busy": bool}
The trust folder is $ORCHARD_HOME/trust.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def say(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    from engine.cli.pair_cmd import pair_main
    from engine.rpc.paired_client import connect_paired
    from engine.rpc.worker_client import WorkerCallError
    from engine.trust import open_trust_home
    from tests.worker.remote_jobs import set_up_job

    address, out = sys.argv[1], Path(sys.argv[2])
    say({"ready": True})
    client = None
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["pair"]:
            say({"pair": pair_main(address, words[1])})
            continue
        if client is None:
            client, _ = connect_paired(address, open_trust_home(), timeout_s=30)
        if words[:1] == ["setup"]:
            peers = [address, words[2]] if len(words) > 2 else None
            say({"job_id": set_up_job(client, out / words[1], words[1], peers=peers)})
        elif words[:1] == ["step"]:
            try:
                client.step(int(words[1]), 0.01, timeout_s=600)
                say({"step": int(words[1]), "ok": True})
            except WorkerCallError as e:
                code = e.code.name if e.code is not None else ""
                say({"step": int(words[1]), "ok": False, "job_lost": e.job_lost, "code": code,
                     "details": e.details})  # fmt: skip
        elif words[:1] == ["describe"]:
            say({"busy": client.describe()["busy"]})


if __name__ == "__main__":
    main()
