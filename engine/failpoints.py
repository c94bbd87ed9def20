"""Failpoints: a worker that fails at an exact point of a step, for the recovery tests
(docs/reliability.md). A SIGKILL from outside lands wherever the process happens to be;
these name the point. Off unless ``ORCHARD_FAILPOINT`` is set in the worker's environment,
to one or more comma-separated ``NAME@RANK:STEP`` (in a group of any size) or
``NAME@RANK/WORLD:STEP`` (only in a group of WORLD workers: once the group re-forms
smaller, no more). STEP is 0-based.

``exit-after-update``: that rank ends its process (exit status 1, no reply) once its update
of the step is done, so its part of the collective has gone out and its peers finish the
step without its reply. It waits ``ACK_GRACE_S`` first: its gRPC server has taken in every
piece the peers sent it, and the grace lets the acknowledgements go back, so a peer does not
fail its step on an ack cut off.

``fail-before-commit``: that rank's optimizer step raises after its collective completed,
``FAIL_DELAY_S`` late (past an ``exit-after-update`` peer's grace), and puts back its
previous state, as a step whose last send to a dying peer failed does: the survivors then
end at different steps.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)

ENV = "ORCHARD_FAILPOINT"
ACK_GRACE_S = 2.0  # under the coordinator's 4 s health-check timeout: no step is held long
FAIL_DELAY_S = 4.0  # past ACK_GRACE_S: the exiting peer is gone first


class FailpointError(RuntimeError):
    """A step failed at a failpoint."""


def reached(name: str, rank: int, world: int, step: int) -> None:
    """Act here when ``ORCHARD_FAILPOINT`` names this point, rank (and group size) and step."""
    specs = os.environ.get(ENV, "")
    if not specs:
        return
    wanted = {f"{name}@{rank}:{step}", f"{name}@{rank}/{world}:{step}"}
    spec = next((s.strip() for s in specs.split(",") if s.strip() in wanted), None)
    if spec is None:
        return
    log.warning("failpoint %s: rank %d at step %d", spec, rank, step)
    if name == "fail-before-commit":
        time.sleep(FAIL_DELAY_S)
        raise FailpointError(f"failpoint {spec}")
    time.sleep(ACK_GRACE_S)
    for h in logging.getLogger().handlers:
        h.flush()
    os._exit(1)
