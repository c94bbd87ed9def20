"""Probe a paired Mac from the app: its free memory, matmul speed and the link to it.

The same measurement as probing this machine, but over the paired channel the coordinator
uses (pinned TLS + signed calls), so a Probe that works means a run can reach the worker.
Runs on a pool thread (app.tasks.run_task); failures become one readable line.
"""

from __future__ import annotations

from engine.rpc.paired_client import NotPairedError, connect_paired
from engine.rpc.probe_client import ProbeResult, probe_worker
from engine.rpc.tls import PeerCertificateError
from engine.rpc.worker_client import WorkerCallError
from engine.trust import open_trust_home

CONNECT_TIMEOUT_S = 15.0


class RemoteProbeError(RuntimeError):
    """Why a paired worker could not be probed, in the words the Cluster page shows."""


def probe_paired_worker(address: str, benchmark_s: float = 1.0) -> ProbeResult:
    """Connect to the paired worker at host:port and measure it; raises RemoteProbeError."""
    try:
        client, _peer = connect_paired(address, open_trust_home(), timeout_s=CONNECT_TIMEOUT_S)
    except NotPairedError:
        raise RemoteProbeError(
            f"{address} is not paired with this Mac yet: select it, press Pair… and enter the "
            "code its `orchard worker` shows"
        ) from None
    except PeerCertificateError as e:
        raise RemoteProbeError(
            f"cannot reach the worker at {address}; is `orchard worker` still running there? ({e})"
        ) from None
    try:
        return probe_worker(client, payload_mb=4, benchmark_s=benchmark_s)
    except WorkerCallError as e:
        what = "the worker stopped answering" if e.unreachable else "the worker refused the probe"
        raise RemoteProbeError(f"{address}: {what} ({e.details})") from None
    finally:
        client.close()
