"""A remote worker whose network goes silent during a real distributed run (issue 6, row 10).

Three paired `orchard worker` agents over pinned TLS: two share the coordinator's network
namespace, the third sits across a veth cable in another. After step HOLD_AT the coordinator
holds its run thread, the test cuts the cable so that packets vanish with no reset (a
``blackhole`` qdisc on both ends, or both ends set down where the kernel lacks it), and the
run goes on into a step over the dead link. The coordinator must notice within a bound, re-form
with the two workers left in place (Regroup: only the interrupted step is redone) and finish with an adapter
on the curve of a run that never lost anyone. Every wait has a deadline: never a hang.
Detection and recovery times are printed (run with -s to see them).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from engine.runtime import recovery
from tests.discovery.conftest import netns_pair  # noqa: F401 - fixture
from tests.reliability.link_cut import blackhole_available, cut
from tests.runtime.helpers import reference_run, tiny_job, train_losses
from tests.worker.remote_procs import LineProcess, json_line, start_agent

pytestmark = [pytest.mark.slow, pytest.mark.netns]
STEPS, EVERY, HOLD_AT = 8, 3, 4  # checkpoint at 3; cut after step 4; the survivors regroup
STEP_TIMEOUT_S = 30.0  # dist.step_timeout_s: the backstop the detection must beat or meet
REL_TOL = 1e-5


def detection_bound() -> float:
    """How long detection may take. With a heartbeat during calls (recovery.HEARTBEAT_S) a
    silent host is found within a beat plus its health-check timeout; without one the Step
    deadline is the backstop. Either way a final health probe confirms who is lost."""
    probe = recovery.PROBE_TIMEOUT_S
    beat = getattr(recovery, "HEARTBEAT_S", None)
    if beat is not None:
        return beat + recovery.HEARTBEAT_TIMEOUT_S + probe + 3.0  # + scheduling on a loaded VM
    return STEP_TIMEOUT_S + probe + 3.0


@pytest.mark.timeout(240)
# reduce-scatter passes too (same detection; its sharded state re-forms from the snapshot) but
# costs another ~40 s of CPU, mostly three job processes importing mlx-lm; add it here to run it
@pytest.mark.parametrize("mode", ["all-reduce"])
def test_a_worker_cut_off_mid_run_is_dropped_and_the_run_finishes_on_the_same_curve(
    netns_pair,  # noqa: F811 - the fixture imported above
    tmp_path,
    mode,
):
    how = "blackhole" if blackhole_available(netns_pair) else "down"
    started: list[LineProcess] = []
    try:
        places = [netns_pair.a, netns_pair.a, netns_pair.b]
        with ThreadPoolExecutor(3) as pool:
            agents = list(
                pool.map(lambda r: start_agent(tmp_path / f"w{r}", netns=places[r]), range(3))
            )
        started += [p for p, _ in agents]
        addrs = [netns_pair.addr_a, netns_pair.addr_a, netns_pair.addr_b]
        hosts = [f"{addr}:{a.port}" for addr, (_, a) in zip(addrs, agents, strict=True)]
        cut_host = hosts[2]
        coord = LineProcess(
            ["-m", "tests.reliability.cut_coordinator", "--out", str(tmp_path / "runs"),
             "--mode", mode, "--steps", str(STEPS), "--hold-at", str(HOLD_AT),
             "--every", str(EVERY), "--step-timeout", str(STEP_TIMEOUT_S),
             *(f"{h}={a.code}" for h, (_, a) in zip(hosts, agents, strict=True))],
            tmp_path / "coord", netns=netns_pair.a,
        )  # fmt: skip
        started.append(coord)
        # The curve of a run that never failed (one process; N workers give the same curve)
        reference = train_losses(
            reference_run(tiny_job(tmp_path / "ref", STEPS), tmp_path / "ref" / "run")
        )
        for h in hosts:
            assert coord.wait_for(json_line(paired=h), 90)["rc"] == 0  # after its imports
        coord.wait_for(json_line(held=HOLD_AT), 120)

        cut(netns_pair, how)
        t_cut = time.time()  # wall clock, as the coordinator stamps its events
        coord.send("go")
        result = coord.wait_for(json_line(result=None), 150)
    finally:
        with ThreadPoolExecutor(len(started) or 1) as pool:  # the cut one may take a while
            list(pool.map(lambda p: p.close(), started))

    assert result["result"] == "finished", result
    assert result["adapter"], "no adapter was written"
    lines = coord.seen
    assert any(json_line(state="recovering")(s) for s in lines), f"no recovery: {lines[-8:]}"
    recovered = next(
        o for s in lines if (o := json_line(state="running")(s)) and o["detail"].get("recovered")
    )
    info = recovered["detail"]
    assert info["lost"] == [cut_host] and info["workers"] == 2, info
    # the survivors regroup in place at step 4: nothing before the interrupted step is redone
    assert info["regrouped"] and info["redo_from"] == HOLD_AT, info
    detect = info["detected_at"] - t_cut
    losses = np.array(result["losses"])
    assert losses.shape == reference.shape == (STEPS,), losses
    rel = np.abs(losses - reference) / np.abs(reference)
    first_after = min(
        o["t"] for s in lines if (o := json_line(step=None)(s)) and o["t"] > recovered["t"]
    )
    print(f"\n{mode}, link cut ({how}) after step {HOLD_AT}: detection {detect:.2f}s "
          f"(step deadline {STEP_TIMEOUT_S:.0f}s), re-formed {recovered['t'] - t_cut:.2f}s, "
          f"next completed step {first_after - t_cut:.2f}s after the cut; worst rel diff "
          f"{rel.max():.1e}")  # fmt: skip
    assert 0 < detect < detection_bound(), f"detected {detect:.1f}s after the cut"
    assert rel.max() < REL_TOL, f"worst step {rel.argmax() + 1}: rel diff {rel.max():.2e}"
