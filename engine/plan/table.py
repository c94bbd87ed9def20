"""The plan as text: what `orchard plan` prints."""

from __future__ import annotations

from engine.plan.planner import Plan


def format_plan(p: Plan, limit: int = 0) -> str:
    lines = [f"{'mode':<17} {'compress':<8} {'accum':>5} {'step_s':>8} {'compute':>8} "
             f"{'sync':>8} {'tokens/s':>10} {'speedup':>8} {'effic.':>7}"]  # fmt: skip
    rows = p.predictions[:limit] if limit else p.predictions
    for r in rows:
        c = r.choice
        mark = "  <- auto" if r is p.best else ""
        lines.append(f"{c.mode:<17} {c.compression:<8} {c.grad_accum:>5} {r.step_s:>8.3f} "
                     f"{r.compute_s:>8.3f} {r.sync_s:>8.3f} {r.tokens_per_s:>10,.0f} "
                     f"{r.speedup:>7.2f}x {r.efficiency:>6.0%}{mark}")  # fmt: skip
    lines.append("")
    lines.append("each Mac (share of the batch, its machine's tokens/s alone in one process, "
                 "tokens/s the machine adds to the best plan):")  # fmt: skip
    for mac, share in zip(p.macs, p.best.shares, strict=True):
        gain = p.contributions.get(mac.machine)
        added = f"{gain:+,.0f}" if gain is not None else "?"
        flag = "   <- would slow the run: leave it out" if gain is not None and gain < 0 else ""
        shared = f", a share of {mac.host}" if mac.host else ""
        lines.append(f"  {mac.name:<24} {share:>3} seq  {p.alone_tokens_per_s[mac.machine]:>10,.0f}  "
                     f"{added:>10}  ({flops_text(mac.flops)} from {mac.source}{shared}, "
                     f"{mac.bandwidth_bytes_s * 8 / 1e6:,.0f} Mbit/s, {mac.rtt_s * 1e3:.2f} ms){flag}")  # fmt: skip
    for name, why in p.refused.items():
        lines.append(f"  {name:<24} refused: {why}")
    lines.append("")
    lines.append(f"auto: {p.reason}")
    lines.append(p.summary())
    lines.append(
        f"tokens/s counts trained tokens (padding and masked prompts not); {p.work.data_note}"
    )
    return "\n".join(lines)


def flops_text(flops: float) -> str:
    """A training rate in the unit that shows it: TFLOP/s for a Mac, GFLOP/s for a small VM."""
    return f"{flops / 1e12:.2f} TFLOP/s" if flops >= 1e11 else f"{flops / 1e9:.2f} GFLOP/s"
