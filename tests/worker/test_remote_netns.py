"""End to end across network namespaces: discovered over multicast, paired with the code read
from the worker's terminal, then trained over pinned TLS in two sync modes.

Worker 0 and the coordinator live in namespace A, worker 1 in namespace B; they are joined by a
veth cable, so every byte between worker 1 and the others is real TCP between two addresses
(control calls, file shipping and the workers' own collective traffic, TLS-pinned as well).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.discovery.conftest import netns_pair, service_type  # noqa: F401 - fixtures
from tests.runtime.helpers import reference_run, tiny_job, train_losses
from tests.worker.remote_procs import LineProcess, json_line, peer_event, start_agent

pytestmark = [pytest.mark.slow, pytest.mark.netns, pytest.mark.timeout(420)]
STEPS = 4


def test_discover_pair_and_train_over_tls(netns_pair, service_type, tmp_path):  # noqa: F811
    started: list[LineProcess] = []
    try:
        p0, w0 = start_agent(tmp_path / "w0", netns=netns_pair.a, service_type=service_type)
        started.append(p0)
        p1, w1 = start_agent(tmp_path / "w1", netns=netns_pair.b, service_type=service_type)
        started.append(p1)
        coord = LineProcess(
            ["-m", "tests.worker.remote_coordinator", "--service-type", service_type,
             "--out", str(tmp_path / "runs")],
            tmp_path / "coord", netns=netns_pair.a,
        )  # fmt: skip
        started.append(coord)
        coord.wait_for(json_line(ready=True), 60)

        # Discovery: worker 1 crosses the cable; both advertise their certificate and "idle".
        found: dict[str, dict] = {}

        def both_added(line: str) -> bool:
            peer = peer_event("added", valid=True)(line)
            if peer and peer["worker_id"] in (w0.worker_id, w1.worker_id):
                found[peer["worker_id"]] = peer
            return len(found) == 2

        coord.wait_for(both_added, 30)
        rec1 = found[w1.worker_id]
        assert rec1["addresses"] == [netns_pair.addr_b] and rec1["port"] == w1.port
        assert (rec1["state"], rec1["paired"]) == ("idle", False)
        hosts = [f"{found[w.worker_id]['addresses'][0]}:{w.port}" for w in (w0, w1)]

        # Not paired yet: the coordinator refuses to use it, with the fix in the message.
        coord.send(f"connect {hosts[1]}")
        reply = coord.wait_for(json_line(connect=hosts[1]), 30)
        assert f"worker {hosts[1]} is not paired: run `orchard pair {hosts[1]}" in reply["error"]

        # Pair with the codes from the workers' terminals and the advertised fingerprints.
        for host, w in zip(hosts, (w0, w1), strict=True):
            coord.send(f"pair {host} {w.code} {found[w.worker_id]['fingerprint']}")
            assert coord.wait_for(json_line(pair=host), 30)["rc"] == 0
        coord.seen_or_wait(peer_event("updated", worker_id=w1.worker_id, paired=True), 20)

        losses = {}
        for mode in ("all-reduce", "reduce-scatter"):
            hold = 1 if mode == "all-reduce" else -1
            coord.send(f"train {mode} {STEPS} {','.join(hosts)} {hold}")
            if hold > 0:
                # Worker 1 tells the network it is busy while it trains. The run waits after
                # step 1 until the browser has seen that: a busy spell shorter than the
                # advertisement's MIN_UPDATE_GAP_S is merged into the idle after it, by design
                # (engine/worker/remote.py), so only a held run makes "busy" sure to show.
                coord.wait_for(json_line(held=hold), 300)
                coord.seen_or_wait(peer_event("updated", worker_id=w1.worker_id, state="busy"), 60)
                coord.send("go")
            result = coord.wait_for(json_line(train=mode), 300)
            assert result["status"] == "finished", result
            losses[mode] = np.array(result["losses"])
            assert losses[mode].shape == (STEPS,) and np.isfinite(losses[mode]).all()
        # Both modes are exact rewrites of one worker's step: one process on the same global
        # batches (engine.train's own loop) gives the same curve.
        job = tiny_job(tmp_path / "ref", STEPS)
        ref = train_losses(reference_run(job, tmp_path / "ref" / "run"))
        for mode, got in losses.items():
            rel = np.abs(got - ref) / ref
            assert rel.max() < 1e-4, f"{mode}: rel diff {rel}"
        # ... and idle again once the runs are over.
        states = [
            peer["state"]
            for line in coord.seen
            if (peer := peer_event("updated", worker_id=w1.worker_id)(line))
        ]
        if states[-1] != "idle":
            coord.wait_for(peer_event("updated", worker_id=w1.worker_id, state="idle"), 20)
    finally:
        for p in reversed(started):
            p.close()


def test_a_spoofed_advertisement_is_refused(netns_pair, service_type, tmp_path):  # noqa: F811
    started: list[LineProcess] = []
    try:
        p1, w1 = start_agent(tmp_path / "w1", netns=netns_pair.b, service_type=service_type)
        started.append(p1)
        # The impostor: a real worker with its own key, plus a forged advertisement that copies
        # worker 1's id and fingerprint but points at the impostor's port.
        p2, imp = start_agent(tmp_path / "imp", netns=netns_pair.b, extra=("--no-warm-spare",))
        started.append(p2)
        coord = LineProcess(
            ["-m", "tests.worker.remote_coordinator", "--service-type", service_type,
             "--out", str(tmp_path / "runs")],
            tmp_path / "coord", netns=netns_pair.a,
        )  # fmt: skip
        started.append(coord)
        coord.wait_for(json_line(ready=True), 60)
        real = coord.wait_for(peer_event("added", worker_id=w1.worker_id, port=w1.port), 30)

        forger = LineProcess(
            ["-m", "tests.discovery.peer_proc", "advertise", "--id", w1.worker_id,
             "--port", str(imp.port), "--fp", real["fingerprint"], "--service-type", service_type],
            tmp_path / "forger", netns=netns_pair.b,
        )  # fmt: skip
        started.append(forger)
        fake = coord.wait_for(peer_event("added", worker_id=w1.worker_id, port=imp.port), 30)
        assert fake["fingerprint"] == real["fingerprint"]  # the record itself looks right
        fake_host = f"{fake['addresses'][0]}:{imp.port}"

        # Pairing from the forged record fails on the certificate, even with the right code.
        coord.send(f"pair {fake_host} {imp.code} {fake['fingerprint']}")
        assert coord.wait_for(json_line(pair=fake_host), 30)["rc"] == 1
        coord.send(f"connect {fake_host}")
        assert "is not paired" in coord.wait_for(json_line(connect=fake_host), 30)["error"]
        # The real worker pairs fine, and the forged record still cannot be used for it.
        real_host = f"{real['addresses'][0]}:{w1.port}"
        coord.send(f"pair {real_host} {w1.code} {real['fingerprint']}")
        assert coord.wait_for(json_line(pair=real_host), 30)["rc"] == 0
        coord.send(f"connect {fake_host}")
        assert "is not paired" in coord.wait_for(json_line(connect=fake_host), 30)["error"]
        coord.send(f"connect {real_host}")
        assert coord.wait_for(json_line(connect=real_host), 30)["error"] == ""
    finally:
        for p in reversed(started):
            p.close()
