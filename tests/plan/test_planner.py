"""The planner's maths: bytes and rounds per sync mode, shares, memory, contributions, the
pick, and a probe that lies. Pure functions on plain numbers: no network, no MLX."""

from __future__ import annotations

import pytest

from engine.plan import Costs, Mac, Workload, machine_macs, plan, split_by_speed
from engine.plan.comm import sync_time

GIB = 2**30
FREE = Costs(grpc_bytes_s=1e12, mlx_bytes_s=1e12, grpc_round_s=0.0, mlx_round_s=0.0,
             update_s_per_param=0.0, micro_batch_s=0.0, initial_window_bytes=1e12)  # fmt: skip


def mac(name="m", tflops=10.0, gbit=1.0, rtt_ms=0.0, mem_gib=64):
    return Mac(name, tflops * 1e12, mem_gib * GIB, gbit * 1e9 / 8, rtt_ms / 1e3, apple=True)


def work(params=10_000_000, batch=8, **kw):
    base = dict(grad_params=params, batch=batch, seq_len=512, flops_per_token=2e10,
                fixed_bytes=10 * GIB, bytes_per_sequence=1 * GIB, bucket_bytes=2**40)  # fmt: skip
    return Workload(**{**base, **kw})


@pytest.mark.parametrize(
    ("mode", "n", "sent"),
    [
        ("all-reduce", 2, 2 * (1 / 2) * 4e7),  # reduce-scatter + all-gather: 2(N-1)/N S w
        ("all-reduce", 4, 2 * (3 / 4) * 4e7),
        ("ring", 3, 2 * (2 / 3) * 4e7),
        ("reduce-scatter", 4, (3 / 4) * 4e7 + (3 / 4) * 4e7),  # grads, then fp32 params
        ("parameter-server", 3, 2 * 4e7),  # rank 0 sends the parameters to each of 2 peers
    ],
)
def test_bytes_each_mode_moves(mode, n, sent):
    got = sync_time(mode, "none", [mac() for _ in range(n)], work(), FREE)
    assert got.bytes_per_worker == pytest.approx(sent)


def test_link_bound_time_is_bytes_over_rate_plus_rounds():
    macs = [mac(gbit=1.0, rtt_ms=2.0) for _ in range(2)]
    costs = Costs(grpc_bytes_s=1e12, grpc_round_s=0.5e-3, update_s_per_param=0.0,
                  initial_window_bytes=1e12)  # fmt: skip
    got = sync_time("all-reduce", "none", macs, work(), costs)
    assert got.rounds == 2
    assert got.seconds == pytest.approx(4e7 / 125e6 + 2 * (2e-3 + 0.5e-3))
    # the parameter server's rank 0 carries N-1 pushes and N-1 pulls: worse with more peers
    ps3 = sync_time("parameter-server", "none", [mac() for _ in range(3)], work(), costs)
    ps5 = sync_time("parameter-server", "none", [mac() for _ in range(5)], work(), costs)
    assert ps5.seconds > 1.9 * ps3.seconds
    # compression halves the gradient bytes (not ZeRO-1's parameter all-gather)
    half = sync_time("all-reduce", "bf16", macs, work(), costs)
    assert half.bytes_per_worker == pytest.approx(got.bytes_per_worker / 2)


def test_the_transport_ceiling_caps_a_fast_link():
    fast = [mac(gbit=40.0) for _ in range(2)]
    slow_cpu = Costs(grpc_bytes_s=0.5e9, grpc_round_s=0, initial_window_bytes=1e12)
    got = sync_time("all-reduce", "none", fast, work(), slow_cpu).seconds
    assert got == pytest.approx((4e7 + 4e7) / 0.5e9)  # sent and received both cost CPU


def test_shares_follow_speed_and_sum_to_the_batch():
    assert split_by_speed(8, [3.0, 1.0]) == [6, 2]
    assert split_by_speed(7, [1.0, 1.0, 1.0]) in ([3, 2, 2], [2, 3, 2], [2, 2, 3])
    assert sum(split_by_speed(9, [5.0, 2.0, 0.1])) == 9


def test_uneven_macs_finish_together_and_beat_the_fastest_alone():
    p = plan([mac("studio", 12), mac("air", 4)], work(params=1000), FREE)
    assert p.best.shares == (6, 2)
    assert p.best.speedup == pytest.approx(16 / 12, rel=0.05)
    assert p.best.efficiency == pytest.approx(1.0, rel=0.05)
    assert p.slows == [] and all(v > 0 for v in p.contributions.values())


def test_a_mac_on_a_slow_link_is_named_as_slowing_the_run():
    macs = [mac("studio", 12, gbit=10), mac("mbp", 8, gbit=10), mac("air", 1, gbit=0.05, rtt_ms=20)]
    p = plan(macs, work(params=40_000_000), Costs())
    assert p.slows == ["air"]
    assert "air would slow the run" in p.summary()


def test_a_mac_without_memory_for_one_sequence_is_refused_by_name():
    p = plan([mac("studio"), mac("air", mem_gib=8)], work(), FREE)
    assert list(p.refused) == ["air"] and "8.0 GiB free" in p.refused["air"]
    assert [m.name for m in p.macs] == ["studio"]
    with pytest.raises(ValueError, match="no Mac has the memory"):
        plan([mac("air", mem_gib=8)], work(), FREE)


def test_accumulation_rises_only_to_fit_memory():
    tight = plan([mac("a", mem_gib=13), mac("b", mem_gib=13)], work(batch=8), FREE)
    assert tight.best.choice.grad_accum == 2  # 4 sequences each, room for 3 at once
    roomy = plan([mac("a"), mac("b")], work(batch=8), FREE)
    assert roomy.best.choice.grad_accum == 1


def test_lossy_compression_only_when_it_clearly_pays():
    slow = plan(
        [mac("a", gbit=0.15, rtt_ms=8), mac("b", gbit=0.15, rtt_ms=8)], work(params=20_000_000)
    )
    assert slow.best.choice.compression != "none"  # the link bounds the step
    fast = plan([mac("a", gbit=10), mac("b", gbit=10)], work(params=1_000_000))
    assert fast.best.choice.compression == "none"  # casting costs more than it saves


def test_auto_refuses_a_worker_without_memory_by_name(monkeypatch):
    """resolve_auto, with probes and the model stubbed (the parts above it are tested)."""
    from types import SimpleNamespace

    from engine.config import JobSpec
    from engine.plan import resolve

    small = SimpleNamespace(
        matmul_gflops=100.0, free_memory_bytes=1 << 20, bandwidth_mb_s=100.0, rtt_ms=1.0
    )
    big = SimpleNamespace(
        matmul_gflops=100.0, free_memory_bytes=64 << 30, bandwidth_mb_s=100.0, rtt_ms=1.0
    )
    monkeypatch.setattr(resolve, "probe_all", lambda cluster: [big, small])
    cluster = SimpleNamespace(size=2, addresses=["studio:1", "air:2"], remote=True)
    with pytest.raises(MemoryError, match="worker air:2 cannot take part: 0.0 GiB free"):
        resolve.resolve_auto(JobSpec(), cluster)


# ---- machines: worker processes that share one host -------------------------------------------
def test_processes_of_one_machine_share_it_and_never_beat_it_alone():
    machine = mac("this machine", 4)
    p = plan(machine_macs(machine, 2), work(), Costs())
    assert [m.flops for m in p.macs] == [2e12, 2e12] and p.machines == ["this machine"]
    assert sum(m.free_memory_bytes for m in p.macs) == machine.free_memory_bytes
    alone = plan([machine], work(), Costs()).best.tokens_per_s
    assert p.alone_tokens_per_s == {"this machine": pytest.approx(alone)}
    assert p.best.speedup == pytest.approx(p.best.tokens_per_s / alone) and p.best.speedup < 1
    assert p.slows == [] and list(p.contributions) == ["this machine"]
    assert "2 processes sharing this machine" in p.summary()


def test_a_machine_with_two_workers_is_left_out_whole():
    studio = mac("studio", 12, gbit=10)
    far = mac("far", 8, gbit=0.05, rtt_ms=20)  # two agents on a Mac behind a slow link
    macs = [studio, *machine_macs(far, 2, ["far:1", "far:2"])]
    p = plan(macs, work(params=40_000_000), Costs())
    assert set(p.alone_tokens_per_s) == set(p.contributions) == {"studio", "far"}
    assert p.slows == ["far"] and "far would slow the run" in p.summary()
    assert p.best.efficiency <= 1


def test_the_coordinator_probes_a_machines_workers_at_once_and_sums_them(monkeypatch):
    """Local processes probed one at a time each had the machine to themselves and were
    planned as two machines: 1.4x 'the fastest alone' on one machine's cores."""
    import threading
    import time
    from types import SimpleNamespace

    from engine.plan import resolve

    running, overlapped = set(), []
    lock = threading.Lock()

    def probe_worker(client, *_a):
        with lock:
            overlapped.append((client.address, sorted(running)))
            running.add(client.address)
        time.sleep(0.05)
        with lock:
            running.discard(client.address)
        return SimpleNamespace(matmul_gflops=10.0, free_memory_bytes=8 << 30, rtt_ms=0.1,
                               bandwidth_mb_s=1000.0)  # fmt: skip

    monkeypatch.setattr("engine.rpc.probe_client.probe_worker", probe_worker)
    local = ["127.0.0.1:5001", "127.0.0.1:5002", "10.0.0.9:1"]
    cluster = SimpleNamespace(clients=[SimpleNamespace(address=a) for a in local])
    probes = resolve.probe_all(cluster)
    seen = dict(overlapped)
    assert seen["10.0.0.9:1"] == []  # another machine: probed on its own
    assert any(seen[a] for a in local[:2])  # one machine's workers: at once
    macs = resolve.macs_for(list(zip(local, probes, strict=True)), Costs(), apple=True)
    assert [m.machine for m in macs] == ["this machine", "this machine", "10.0.0.9:1"]
    costs = Costs()
    assert macs[0].flops == macs[1].flops == pytest.approx(10e9 * costs.train_efficiency)
    assert macs[0].free_memory_bytes == (8 << 30) // 2  # the machine's memory, shared out
