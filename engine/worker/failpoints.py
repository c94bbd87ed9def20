"""Failpoints: a worker process that dies at an exact point of a step, for the recovery tests
(docs/reliability.md). A SIGKILL from outside lands wherever the process happens to be; these
name the point. Off unless ``ORCHARD_FAILPOINT`` is set in the worker's environment:

    ORCHARD_FAILPOINT=exit-after-update@RANK:STEP       (in a group of any size)
    ORCHARD_FAILPOINT=exit-after-update@RANK/WORLD:STEP (only in a group of WORLD workers:
                                                         once the group re-forms smaller, no more)

``exit-after-update``: rank RANK ends its process (exit status 1, no reply) once its update of
0-based step STEP is done, so its part of the collective has gone out and its peers finish
the step without its reply. It waits ``ACK_GRACE_S`` first: its gRPC server has taken in
every piece the peers sent it, and the grace lets the acknowledgements go back, so a peer
does not fail its step on an ack cut off (that case, survivors at different steps, is
docs/reliability.md's too, and a SIGKILL in the tests lands in it at random).
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)

ENV = "ORCHARD_FAILPOINT"
ACK_GRACE_S = 2.0  # under the coordinator's 4 s health-check timeout: no step is held long


def reached(name: str, rank: int, world: int, step: int) -> None:
    """End this process here when ``ORCHARD_FAILPOINT`` names this point, rank (and group
    size) and step."""
    spec = os.environ.get(ENV, "")
    if spec not in (f"{name}@{rank}:{step}", f"{name}@{rank}/{world}:{step}"):
        return
    log.warning("failpoint %s: rank %d ends its process at step %d", spec, rank, step)
    time.sleep(ACK_GRACE_S)
    for h in logging.getLogger().handlers:
        h.flush()
    os._exit(1)
