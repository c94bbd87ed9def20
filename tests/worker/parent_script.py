"""A stand-in engine process for the lifeline tests: starts local workers, prints their pids.

Usage: parent_script.py <data_dir> <n> <exit|wait>. With "exit" it ends normally once a line
arrives on its stdin, so the test can see the workers alive first; with "wait" it sleeps until
signalled, and SIGINT (KeyboardInterrupt) stops the workers in the finally block, as the CLI does.
"""

import signal
import sys
import time
from pathlib import Path

from engine.rpc.auth import new_token
from engine.runtime.local_workers import start_local_worker, stop_local_workers

# A process started in the background by a non-interactive shell inherits SIGINT as ignored,
# and Python then leaves it so; the CLI installs its own handler, and so does this stand-in.
signal.signal(signal.SIGINT, signal.default_int_handler)
data_dir, n, how = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
token = new_token()
workers = []
try:
    for i in range(n):
        workers.append(start_local_worker(token, data_dir, data_dir / f"worker{i}.log", n))
    print("PIDS=" + ",".join(str(w.pid) for w in workers), flush=True)
    if how == "exit":
        sys.stdin.readline()
    if how == "wait":
        while True:
            time.sleep(0.2)
finally:
    stop_local_workers(workers, grace_s=5)
