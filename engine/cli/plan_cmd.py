"""`orchard plan [job.toml] [--hosts H ...]`: probe the workers, print every sync choice's
predicted step time, tokens/s and speedup, what each Mac adds, and what auto would pick."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path


def add_parser(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Register the subcommand on `orchard`'s parser (engine/cli/main.py)."""
    s = add("plan", plan_main, "predict each sync mode on these workers and pick one (auto)")
    s.add_argument("job", nargs="?", help="job.toml (defaults to the built-in job)")
    s.add_argument("--hosts", nargs="*", help="workers as host:port (default: the job's)")
    s.add_argument("--workers", type=int, help="local worker processes when no hosts are given")
    s.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a setting")


def plan_main(args: argparse.Namespace) -> int:
    from engine.config import JobSpec
    from engine.plan import format_plan
    from engine.plan.resolve import plan_for, probe_all
    from engine.runtime.cluster import Cluster

    job = JobSpec.load(args.job) if args.job else JobSpec()
    overrides = list(args.set or [])
    if args.hosts is not None:
        overrides.append(f"dist.hosts={args.hosts!r}".replace("'", '"'))
    if args.workers is not None:
        overrides.append(f"dist.workers={args.workers}")
    job = job.with_overrides(overrides)
    with tempfile.TemporaryDirectory(prefix="orchard-plan-") as tmp:
        cluster = Cluster(job, Path(tmp))
        try:
            cluster.start()
            probes = probe_all(cluster)
        finally:
            cluster.stop("plan done")
    result = plan_for(job, list(zip(cluster.addresses, probes, strict=True)), not job.dist.hosts)
    sys.stdout.write(format_plan(result) + "\n")
    return 0
