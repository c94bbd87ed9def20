"""Each worker's share of the global batch follows its measured speed.

A ``Split`` gives each rank a number of whole sequences of the global batch (``shares``) and
the number of micro-batches it cuts them into (``micro_batches``): a worker with more work
than its memory allows in one micro-batch accumulates more micro-batches, never a bigger one.
The token-sum loss makes any split exact: the update is that of the whole global batch.

Speeds start from the probe (its matmul rate, or ``dist.speeds``) and then follow the step
times the workers report: each worker's padded tokens (``StepResult.work_tokens``) per second
of gradient time (``grad_s``: the time before its first collective, which is what the others
wait for; the update after the sync does not depend on the split), the median of its last
WINDOW steps, so an outlier step on a busy machine does not move the split. A worker that
reports no ``grad_s`` is measured by ``compute_s``. At a step boundary the coordinator
re-splits when the best split for those speeds is predicted to shorten the step by more than
HYSTERESIS; the first step of a new split or group is not measured (new shapes compile), and
a split stands for MIN_MEASURED measured steps before it may change again, so noise does not
make it oscillate. A probe that failed or lied is corrected in the same way. (A fixed cost per
step biases a small share's rate down; at the balanced split every worker's time is the same,
so that split is still the fixed point the re-splits converge to.)

The split itself is engine/plan/shares.py (shares_for, makespan, micro_batch_counts): the
planner predicts with the same functions, so its plan and the run split the batch alike.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from engine.config import JobSpec
from engine.plan.shares import makespan, micro_batch_counts, shares_for

__all__ = ["Balancer", "Probe", "Split", "largest_micro_batch", "makespan", "memory_caps",
           "micro_batch_counts", "probe_workers", "recorded_splits", "shares_for"]  # fmt: skip

log = logging.getLogger(__name__)

HYSTERESIS = 0.05  # re-split only when the predicted step is at least this much shorter
WINDOW = 8  # a worker's speed is the median of its last WINDOW measured steps (noise-proof)
MIN_MEASURED = 2  # measured steps a split stands before it may change again
SETTLE_STEPS = 1  # steps not measured after a split or group change (compilation)
MEMORY_HEADROOM = 0.8  # share of a worker's free memory a step may plan to use
PROBE_BENCHMARK_S = 0.25  # the probe's matmul benchmark: a relative speed only, so short
LIAR_RATIO = 1.5  # a measured speed this far from the probe's is called out in the log


@dataclass(frozen=True)
class Split:
    """How one step's global batch is cut: sequences and micro-batches, by rank."""

    shares: tuple[int, ...]
    micro_batches: tuple[int, ...]

    def to_json(self) -> dict[str, list[int]]:
        return {"shares": list(self.shares), "micro_batches": list(self.micro_batches)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Split:
        return cls(tuple(int(s) for s in d["shares"]), tuple(int(k) for k in d["micro_batches"]))


# ---- memory -----------------------------------------------------------------------------
def largest_micro_batch(info: Any, job: JobSpec, free_bytes: float) -> int:
    """The most sequences one micro-batch may hold on a worker with ``free_bytes`` free:
    engine.model.memory's estimate (with a second gradient buffer for accumulation) within
    MEMORY_HEADROOM of it. 0 when not even one sequence fits; at most run.batch_size."""
    from engine.model.memory import estimate_memory

    budget = free_bytes * MEMORY_HEADROOM

    def fits(m: int) -> bool:
        # batch 2m over 2 micro-batches: micro-batches of m, gradients accumulated
        j = replace(job, run=replace(job.run, batch_size=2 * m, grad_accum=2))
        return estimate_memory(info, j, workers=1).total_bytes <= budget

    if not fits(1):
        return 0
    lo, hi = 1, job.run.batch_size
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def equal_micro_batch(job: JobSpec, world: int) -> int:
    """The micro-batch of an equal split: what the memory estimate before Start assumed."""
    return max(1, math.ceil(job.run.batch_size / max(1, world) / job.run.grad_accum))


# ---- what the coordinator asks of the workers before a run -----------------------------
@dataclass(frozen=True)
class Probe:
    """What a worker told before its job: free memory, and a relative speed (0: none)."""

    free_bytes: int
    speed: float


def probe_workers(
    call_all: Callable[[Callable[[Any], Any]], list[Any]], benchmark: bool
) -> list[Probe | str]:
    """Probe every worker at once (``call_all(fn)`` runs ``fn(client)`` on each, by rank);
    a worker whose probe fails gives the reason instead of a Probe."""

    def one(client: Any) -> Probe | str:
        try:
            r = client.probe(run_benchmark=benchmark, benchmark_s=PROBE_BENCHMARK_S)
        except Exception as e:  # noqa: BLE001 - a failed probe only loses the head start
            return str(e) or type(e).__name__
        return Probe(int(r.free_memory_bytes), float(r.matmul_gflops))

    return call_all(one)


def model_info(job: JobSpec) -> Any:
    """The model's shapes (no weights loaded) for the memory estimate, or None."""
    from engine.config import resolve_model_path
    from engine.model.inspect import inspect_model

    try:
        return inspect_model(resolve_model_path(job.model.path))
    except Exception as e:  # noqa: BLE001 - without it, micro-batches stay at the equal split's
        log.info("no memory estimate for %s (%s): micro-batches stay at the equal split's size",
                 job.model.path, e)  # fmt: skip
        return None


def memory_caps(
    job: JobSpec, info: Any, addresses: list[str], free: list[int | None]
) -> list[int | None]:
    """Each worker's largest micro-batch; workers on one host share its free memory.
    None where the free memory or the model is unknown."""
    hosts = [a.rsplit(":", 1)[0] for a in addresses]
    caps: list[int | None] = []
    for host, f in zip(hosts, free, strict=True):
        if info is None or f is None:
            caps.append(None)
        else:
            caps.append(largest_micro_batch(info, job, f / hosts.count(host)))
    return caps


# ---- the state of one run ---------------------------------------------------------------
class Balancer:
    """The split of each step, from the probe and then from measured step times.

    Measurements are kept by worker address, so a worker keeps its own when the group
    re-forms around it; a newcomer starts at the others' median."""

    def __init__(self, job: JobSpec):
        self.job = job
        self.batch = job.run.batch_size
        self.accum = job.run.grad_accum
        self.policy = job.dist.balance
        self.addresses: list[str] = []
        self.prior: dict[str, float] = {}  # relative speed before any step (probe, dist.speeds)
        self.samples: dict[str, deque[tuple[float, float]]] = {}  # (work tokens, grad seconds)
        self.caps: dict[str, int | None] = {}  # largest micro-batch its memory allows
        self.split = Split((), ())
        self.since = 0  # the step the current split took effect
        self._settle = SETTLE_STEPS
        self._measured = 0
        self._replay: dict[int, Split] = {}

    # -- set-up ----------------------------------------------------------------------------
    def begin(self, addresses: list[str], probes: list[Probe | str], caps: list[int | None],
              step: int = 0) -> list[str]:  # fmt: skip
        """The first split, from the probes (or dist.speeds); returns lines for the log."""
        notes = []
        speeds = self.job.dist.speeds
        for r, (a, p) in enumerate(zip(addresses, probes, strict=True)):
            self.caps[a] = caps[r]
            if speeds:
                self.prior[a] = float(speeds[r])
            elif isinstance(p, str):
                if self.policy == "speed":
                    notes.append(f"probe of worker {a} failed ({p}): it starts at the others' "
                                 "speed, and its step times correct it")  # fmt: skip
            elif p.speed > 0:
                self.prior[a] = p.speed
            if caps[r] == 0:
                free = "" if isinstance(p, str) else f" ({p.free_bytes / 2**30:.1f} GiB free)"
                notes.append(f"worker {a}: not even one sequence fits its memory{free}: it "
                             "takes no share of the batch")  # fmt: skip
        notes.append(self.regroup(addresses, step, why=self._source()))
        return notes

    def _source(self) -> str:
        if self.policy == "equal":
            return "equal split (dist.balance = 'equal')"
        if self.job.dist.speeds:
            return f"from dist.speeds {list(self.job.dist.speeds)}"
        return "from the probe" if self.prior else "equal until step times come in"

    def regroup(self, addresses: list[str], step: int, why: str = "group re-formed") -> str:
        """The workers changed (start, loss, rejoin): split afresh for these ranks."""
        self.addresses = list(addresses)
        self._settle, self._measured = SETTLE_STEPS, 0
        self._adopt(self._best(), step)
        return self.describe(why)

    # -- every step --------------------------------------------------------------------------
    def plan(self, step: int) -> Split:
        """The split of ``step`` (a recorded one while a resume repeats recorded steps)."""
        replayed = self._replay.pop(step, None)
        if replayed is not None and len(replayed.shares) == len(self.addresses):
            if replayed != self.split:
                self.split, self.since = replayed, step
                self._settle, self._measured = SETTLE_STEPS, 0
        return self.split

    def observe(self, step: int, outs: Sequence[Any]) -> str | None:
        """Take in a finished step's StepResults (by rank); returns a log line when the
        next step gets a new split."""
        if len(outs) != len(self.addresses):
            return None
        if self._settle > 0:
            self._settle -= 1
        else:
            for a, share, o in zip(self.addresses, self.split.shares, outs, strict=True):
                work = float(getattr(o, "work_tokens", 0))
                secs = float(getattr(o, "grad_s", 0.0) or o.compute_s)
                if share and work > 0 and secs > 0:
                    self.samples.setdefault(a, deque(maxlen=WINDOW)).append((work, secs))
            self._measured += 1
        if self.policy != "speed" or self._measured < MIN_MEASURED or len(outs) < 2:
            return None  # (one worker: nothing to even out, every step)
        if any(s > step for s in self._replay):  # a resume still repeats recorded steps
            return None
        speeds = self.speeds()
        best = self._best(speeds)
        if best.shares == self.split.shares:
            return None
        now, then = makespan(self.split.shares, speeds), makespan(best.shares, speeds)
        if not then < now * (1 - HYSTERESIS):
            return None
        old = self.split
        self._adopt(best, step + 1)
        self._settle, self._measured = SETTLE_STEPS, 0
        gain = f"predicted {now / then:.2f}x shorter gradient time than {_slash(old.shares)}"
        return self.describe(f"re-split after step {step + 1} by measured speed, {gain}")

    def measured(self) -> dict[str, float]:
        """Each measured worker's padded tokens per second of gradient time, by address."""
        out = {}
        for a in self.addresses:
            if samples := self.samples.get(a):
                out[a] = statistics.median(w / t for w, t in samples)
        return out

    def speeds(self) -> list[float]:
        """Relative speed by rank: measured where measured; else the prior, scaled to the
        measured units by the workers that have both; else the others' median."""
        rates = self.measured()
        both = [rates[a] / self.prior[a] for a in rates if a in self.prior]
        scale = statistics.median(both) if both else None
        if not rates:  # nothing measured yet: the priors, as they are
            rates = {a: self.prior[a] for a in self.addresses if a in self.prior}
            scale = 1.0
        fallback = statistics.median(rates.values()) if rates else 1.0
        out = []
        for a in self.addresses:
            if self.caps.get(a) == 0:
                out.append(0.0)  # cannot hold one sequence
            elif a in rates:
                out.append(rates[a])
            elif a in self.prior and scale is not None:
                out.append(self.prior[a] * scale)
            else:
                out.append(fallback)
        return out

    def _best(self, speeds: list[float] | None = None) -> Split:
        n = len(self.addresses)
        if self.policy == "speed":
            v = speeds if speeds is not None else self.speeds()
        elif self.policy == "fixed":  # dist.speeds as given; a newcomer gets their median
            given = [self.prior[a] for a in self.addresses if a in self.prior]
            v = [self.prior.get(a, statistics.median(given) if given else 1.0)
                 for a in self.addresses]  # fmt: skip
        else:
            v = [1.0] * n
        v = [0.0 if self.caps.get(a) == 0 else x for a, x in zip(self.addresses, v, strict=True)]
        shares = shares_for(self.batch, v) if n else []
        equal = equal_micro_batch(self.job, n)
        caps = [equal if self.caps.get(a) is None else self.caps[a] for a in self.addresses]
        return Split(tuple(shares), tuple(micro_batch_counts(shares, caps, self.accum)))

    def _adopt(self, split: Split, step: int) -> None:
        self.split, self.since = split, step

    def describe(self, why: str) -> str:
        """One line: the split, why, and who takes nothing or runs far from its probe."""
        s = self.split
        line = (f"split of the {self.batch}-sequence batch over {len(s.shares)} workers: "
                f"{_slash(s.shares)} sequences, {_slash(s.micro_batches)} micro-batches ({why})")  # fmt: skip
        out = [a for a, share in zip(self.addresses, s.shares, strict=True) if share == 0]
        if out and self.batch >= len(s.shares):
            line += (f"; {', '.join(out)} take no share: a sequence there would finish after "
                     "the whole step on the others (they still join the sync)")  # fmt: skip
        liars = self._liars()
        if liars:
            line += "; " + "; ".join(liars)
        return line

    def _liars(self) -> list[str]:
        """Workers whose measured speed, relative to the group's, is far from their probe's."""
        rates = self.measured()
        pairs = [(a, rates[a], self.prior[a]) for a in rates if a in self.prior]
        if len(pairs) < 2:
            return []
        rate_sum, prior_sum = sum(p[1] for p in pairs), sum(p[2] for p in pairs)
        said = "dist.speeds said" if self.job.dist.speeds else "its probe said"
        out = []
        for a, rate, prior in pairs:
            ratio = (rate / rate_sum) / (prior / prior_sum)
            if ratio < 1 / LIAR_RATIO:
                out.append(f"worker {a} runs {1 / ratio:.1f}x slower than {said}")
            elif ratio > LIAR_RATIO:
                out.append(f"worker {a} runs {ratio:.1f}x faster than {said}")
        return out

    # -- resume ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps, by rank (a resumed group has new addresses)."""
        return {
            **self.split.to_json(), "since": self.since, "policy": self.policy,
            "samples": [[list(x) for x in self.samples.get(a, ())] for a in self.addresses],
            "priors": [self.prior.get(a) for a in self.addresses],
            "caps": [self.caps.get(a) for a in self.addresses],
        }  # fmt: skip

    def restore(self, state: dict[str, Any], step: int) -> str | None:
        """Continue a checkpoint's split and measurements on a group of the same size (rank
        by rank); returns a log line, or None when it does not apply (another size or policy)."""
        n = len(self.addresses)
        try:
            split = Split.from_json(state)
            samples = [[(float(w), float(t)) for w, t in rank] for rank in state["samples"]]
            priors = [None if p is None else float(p) for p in state["priors"]]
        except (KeyError, TypeError, ValueError):
            return None
        if (len(split.shares) != n or sum(split.shares) != self.batch
                or state.get("policy") != self.policy or len(samples) != n or len(priors) != n):  # fmt: skip
            return None
        for a, rank, prior in zip(self.addresses, samples, priors, strict=True):
            self.samples[a] = deque(rank, maxlen=WINDOW)
            if prior is not None:
                self.prior[a] = prior
        self._adopt(split, step)
        return self.describe(f"as recorded at the step-{step} checkpoint")

    def replay(self, recorded: dict[int, Split]) -> None:
        """Splits the run before a resume used at later steps: repeated step for step."""
        self._replay = {s: sp for s, sp in recorded.items() if sum(sp.shares) == self.batch}


def recorded_splits(rows: list[dict[str, Any]], after: int, world: int) -> dict[int, Split]:
    """The split of every step past ``after`` from metrics.jsonl's worker rows (keyed by the
    step index, which is the row's step - 1); steps missing a rank's row are left out."""
    by_step: dict[int, dict[int, tuple[int, int]]] = {}
    for row in rows:
        if row.get("kind") != "worker" or "share" not in row or int(row.get("step", 0)) <= after:
            continue
        ranks = by_step.setdefault(int(row["step"]) - 1, {})
        ranks[int(row["worker"])] = (int(row["share"]), int(row.get("micro_batches", 1)))
    out = {}
    for step, ranks in by_step.items():
        if sorted(ranks) == list(range(world)):
            out[step] = Split(tuple(ranks[r][0] for r in range(world)),
                              tuple(ranks[r][1] for r in range(world)))  # fmt: skip
    return out


def _slash(values: Sequence[int]) -> str:
    return "/".join(str(v) for v in values)
