"""Plan against measurement on shaped links: every sync choice, real LoRA gradient sizes.

Two workers in network namespaces (bench/netsim) sync the LoRA gradients of real models
(resources/model_configs: Qwen2.5 0.5B/1.5B/7B and Llama-3.1-8B, rank 8, attention-only,
as `orchard inspect-model` counts them) through engine.dist's gRPC groups and the
DistributedAdamW the workers use, over each link profile (bench/netsim/profiles.py). The
planner (engine/plan) predicts each choice's step from the link as measured (rate, RTT: what
a probe sees) and from this machine's transport costs, calibrated first on loopback.

Compute is modelled, not run: a 7B step cannot run on a 2-core box. The two Macs are a Mac
Studio M2 Ultra (475 tokens/s LoRA on a 7B) and a MacBook Pro M1 Max (250 tokens/s), both
from mlx-examples lora/README.md, scaled to each model by FLOPs per token; each Mac's share
of the batch follows its speed. measured_step_s = that modelled compute + the synchronisation
and update measured here (the links idle for 0.22 s before each, as during compute).

Sequences are full (batch 8 x 256 tokens, every token trained): tokens/s counts trained
tokens (engine/plan/efficiency.py), here every position. efficiency is the measured step's
tokens/s over the sum of each Mac's tokens/s alone (engine.plan.scaling_efficiency, the
figure the plan, the Tracker and the Monitor show).

Rows: profile= model= mode= predicted_step_s= measured_step_s= efficiency= compute=modelled
Last line: plan_error_max=<z> auto_regret_max=<w>   (targets: z <= 0.25, w <= 0.10)

Run (root; needs scripts/setup.sh --dev): python bench/links.py [--profiles 1gbe wifi6]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.netsim.linkcheck import measure_link  # noqa: E402
from bench.netsim.network import SimNetwork  # noqa: E402
from bench.netsim.profiles import PROFILES  # noqa: E402
from bench.netsim.workers import CHOICES, SyncWorkers  # noqa: E402
from engine.config import RESOURCES, JobSpec  # noqa: E402
from engine.model import inspect_model  # noqa: E402
from engine.plan import Costs, Mac, scaling_efficiency, workload_from_job  # noqa: E402
from engine.plan.data_shape import at_max_seq_len  # noqa: E402
from engine.plan.planner import Choice, alone_tokens_per_s, pick, predict, split_by_speed  # noqa: E402

MODELS = ("Qwen2.5-0.5B", "Qwen2.5-1.5B-Instruct", "Qwen2.5-7B", "Llama-3.1-8B")
SOURCE = "mlx-examples lora/README.md"
# (name, tokens/s of LoRA on a 7B, memory): 475 tok/s "on an M2 Ultra" (Llama 7B, WikiSQL);
# 250 tok/s "on an M1 Max with 32 GB" (Mistral 7B, batch 1, 4 LoRA layers: fewer layers
# to backpropagate, so this flatters the M1 Max a little)
MACS = (("mac-studio-m2-ultra", 475.0, 64 << 30), ("macbook-pro-m1-max", 250.0, 32 << 30))
REFERENCE_7B = "Qwen2.5-7B"  # the FLOPs per token a "7B" figure is converted with
IDLE_S = 0.22  # > TCP's 200 ms minimum RTO: each step's first transfer restarts slow start
STEPS = 4  # the first is a warm-up; the median of the rest counts
BATCH, SEQ = 8, 256


def job() -> JobSpec:
    return JobSpec().with_overrides([f"run.batch_size={BATCH}", f"data.max_seq_len={SEQ}",
                                     'run.precision="bf16"'])  # fmt: skip


def calibrate(loopback: SyncWorkers) -> Costs:
    """This machine's transport, update and codec costs, on loopback (no shaping): what the
    planner cannot know from a probe, measured apart from the shaped runs it predicts."""
    import mlx.core as mx

    from engine.config import OptimSpec
    from engine.dist.compression import decode, encode
    from engine.dist.dist_optimizer import DistributedAdamW
    from engine.dist.group import SingleGroup

    n = 4_000_000
    opt = DistributedAdamW(SingleGroup(), "all-reduce", OptimSpec(), {"g": mx.zeros((n,))})
    ones = mx.ones((n,), mx.float32)
    mx.eval(ones)
    opt.step({"g": ones}, 1.0, 10, 1e-4)  # a step consumes its gradients dict: one each
    t0 = time.perf_counter()
    for _ in range(3):
        opt.step({"g": ones}, 1.0, 10, 1e-4)
    update = (time.perf_counter() - t0) / 3 / n
    x = np.ones(n, np.float32)
    t0 = time.perf_counter()
    decode(*encode(x, "bf16"))
    codec = 4 * n / (time.perf_counter() - t0)
    loopback.run("all-reduce", "none", n, 1, 0.0)
    t = statistics.median(loopback.run("all-reduce", "none", n, 5, 0.0))
    # N = 2: each worker sends 2 (N-1)/N = 1 buffer and receives as much
    grpc = 2 * 4 * n / max(t - update * n, 1e-6)
    base = Costs()
    costs = Costs(grpc_bytes_s=grpc, update_s_per_param=update,
                  codec_bytes_s={**base.codec_bytes_s, "bf16": codec})  # fmt: skip
    print(
        f"calibration (loopback, this machine): gRPC data plane {grpc / 1e9:.2f} GB/s sent+received per "
        f"worker, AdamW {update * 1e9:.1f} ns/param, bf16 codec {codec / 1e9:.2f} GB/s"
    )
    return costs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profiles", nargs="*", default=list(PROFILES), choices=list(PROFILES))
    p.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    t_start = time.time()
    spec = job()
    infos = {
        m: inspect_model(RESOURCES / "model_configs" / m) for m in set(args.models) | {REFERENCE_7B}
    }
    full = at_max_seq_len(SEQ, "synthetic gradients: every sequence full")
    works = {m: workload_from_job(spec, infos[m], data=full) for m in args.models}
    ref_fpt = workload_from_job(spec, infos[REFERENCE_7B], data=full).flops_per_token
    print(f"compute: modelled from {SOURCE}, not run: " + ", ".join(
        f"{name} {tps:.0f} tokens/s on a 7B = {tps * ref_fpt / 1e12:.1f} TFLOP/s" for name, tps, _ in MACS))  # fmt: skip
    errors, regrets = [], []
    first = PROFILES[args.profiles[0]]
    with (
        SimNetwork([first, first]) as net,
        SyncWorkers([(n.ns, n.ip) for n in net.nodes]) as workers,
        SyncWorkers([(None, "127.0.0.1")] * 2) as loopback,
    ):
        for pname in args.profiles:
            prof = PROFILES[pname]
            costs = calibrate(loopback)  # again for each profile: a shared machine's load drifts
            for i in range(2):
                net.reshape(i, prof)
            link = measure_link(net, 0, 1, nbytes=int(min(128e6, prof.rate_bytes_s * 0.8)))
            print(f"link profile={pname} asked={prof.rate_mbit:.0f}Mbit/{prof.rtt_ms}ms "
                  f"measured={link.rate_mbit:.0f}Mbit/{link.rtt_ms:.2f}ms")  # fmt: skip
            macs = [Mac(name, tps * ref_fpt, mem, link.rate_mbit * 1e6 / 8, link.rtt_ms / 1e3,
                        apple=False, source=SOURCE) for name, tps, mem in MACS]  # fmt: skip
            for model in args.models:
                work = works[model]
                alone = {m.name: alone_tokens_per_s(m, work, costs) for m in macs}
                shares = split_by_speed(work.batch, [m.flops for m in macs])
                preds = sorted((predict(Choice(mode, codec, 1), macs, work, shares, alone, costs)
                                for mode, codec in CHOICES), key=lambda q: q.step_s)  # fmt: skip
                auto, _ = pick(preds, costs)
                measured = {}
                for pred in sorted(
                    preds, key=lambda q: CHOICES.index((q.choice.mode, q.choice.compression))
                ):
                    c = pred.choice
                    sync = workers.run(c.mode, c.compression, work.grad_params, STEPS, IDLE_S)[1:]
                    step = pred.compute_s + statistics.median(sync)
                    measured[(c.mode, c.compression)] = step
                    err = abs(pred.step_s - step) / step
                    errors.append(err)
                    eff = scaling_efficiency(work.tokens / step, alone.values())
                    name = c.mode if c.compression == "none" else f"{c.mode}+{c.compression}"
                    print(f"profile={pname} model={model} mode={name} predicted_step_s={pred.step_s:.3f} "
                          f"measured_step_s={step:.3f} efficiency={eff:.2f} compute=modelled", flush=True)  # fmt: skip
                key = (auto.choice.mode, auto.choice.compression)
                regret = measured[key] / min(measured.values()) - 1
                regrets.append(regret)
                best = min(measured, key=measured.get)
                speedup = work.tokens / measured[key] / max(alone.values())
                print(f"auto profile={pname} model={model} picked={'+'.join(key)} "
                      f"best_measured={'+'.join(best)} regret={regret:.3f} "
                      f"speedup_vs_fastest_alone={speedup:.2f}", flush=True)  # fmt: skip
    print(f"elapsed {time.time() - t_start:.0f}s")
    print(f"plan_error_max={max(errors):.3f} auto_regret_max={max(regrets):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
