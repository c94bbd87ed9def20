"""The `orchard` command: app, demo, train, resume, status, attach, worker, discover, pair,
inspect-*, export, models, pull.

Each subcommand is a thin adapter from argv to an engine function; imports are lazy so
`orchard --help` is instant and a missing optional part names itself instead of crashing.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from engine.cli import plan_cmd
from engine.config import DIST_MODES, ConfigError, JobSpec
from engine.no_torch import keep_torch_out

log = logging.getLogger("orchard")


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(f"orchard: {text}\n")


def _stop_on_sigint(stop: threading.Event) -> None:
    """First Ctrl-C asks the run to checkpoint and stop; a second one exits at once."""

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        _err("stopping after the current step (Ctrl-C again to abort)")
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


REFUSED = 2  # the exit code of a run the preflight refused (no run was started)


def _preflight(job: JobSpec, set_flags: bool = True) -> bool:
    """The app's own check (engine/preflight.py) before any worker starts: on refusal print
    why and what fits instead (with the --set flags that apply it) and return False."""
    from engine.preflight import preflight

    result = preflight(job)
    if not result.ok:
        sys.stderr.write(f"orchard: {result.message(cli=set_flags)}\n")
        return False
    for note in result.notes:
        _err(f"note: {note}")
    return True


def _run_job(job: JobSpec, resume_from: Path | None = None) -> tuple[object, int]:
    """Run a job through the engine (worker processes), even on one worker: every run
    folder then holds the world-size-independent checkpoint that resumes on any number.
    Its local workers start first, so their imports overlap the preflight's (a refusal
    ends them: they hold no job yet)."""
    from engine.runtime.warm_workers import WarmWorkers  # spawns before MLX is imported here

    warm = WarmWorkers.spawn(job, run_dir=resume_from)
    try:
        if not _preflight(job, set_flags=resume_from is None):
            return None, REFUSED
        from engine.cli.progress import TerminalProgress
        from engine.runtime import start_run

        sink = TerminalProgress()
        stop = threading.Event()
        _stop_on_sigint(stop)
        handle = start_run(job, sink, stop_event=stop, resume_from=resume_from, warm=warm)
        result = handle.wait()
        return result, _report(result)
    finally:
        if warm is not None:
            warm.close()  # those the run took are its own; this ends only the others


def _report(result: object) -> int:
    # the engine's RunResult says .status, engine.train's (one process) says .state
    status = getattr(result, "status", None) or getattr(result, "state", "finished")
    run_dir = getattr(result, "run_dir", None)
    adapter = getattr(result, "adapter_dir", None)
    if run_dir:
        _out(f"run folder: {run_dir}")
    if adapter:
        _out(f"adapter:    {adapter}")
    if status == "failed":
        _err(getattr(result, "message", "the run failed"))
        return 1
    if status == "stopped":
        _out("stopped; resume with: orchard resume " + str(run_dir))
        return 130
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.runtime.demo import DEMO_NOTICE, DEMO_STEPS, demo_job

    out = args.out or JobSpec().run.out_dir
    steps = args.steps or DEMO_STEPS
    job = demo_job(steps, out, args.workers, args.mode, list(args.set or []))
    _out(DEMO_NOTICE)
    result, code = _run_job(job)
    adapter = getattr(result, "adapter_dir", None)
    if code == 0 and adapter and not args.no_sample:
        from engine.sample import compare_with_adapter

        for s in compare_with_adapter(job.model, adapter):
            _out(f"--- {s.title}: {s.prompt}\n{s.text}")
    return code


def cmd_train(args: argparse.Namespace) -> int:
    job = JobSpec.load(args.job) if args.job else JobSpec()
    overrides = list(args.set or [])
    for flag, key in (("steps", "run.steps"), ("workers", "dist.workers")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    if args.out is not None:  # a folder the user typed is relative to where they typed it
        overrides.append(f'run.out_dir="{Path(args.out).expanduser().resolve()}"')
    for flag, key in (
        ("mode", "dist.mode"),
        ("data", "data.path"),
        ("model", "model.path"),
    ):
        if getattr(args, flag) is not None:
            overrides.append(f'{key}="{getattr(args, flag)}"')
    return _run_job(job.with_overrides(overrides) if overrides else job)[1]


def cmd_resume(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir).expanduser().resolve()  # the same folder from any cwd
    job = JobSpec.load(run_dir / "job.toml")
    if args.workers is not None:
        job = job.with_overrides([f"dist.workers={args.workers}"])
    if _trained_in_one_process(run_dir):
        if job.dist.workers != 1 or job.dist.hosts:
            _err(f"{run_dir} was trained in one process (engine.train), whose checkpoints "
                 "name each tensor; it resumes on one worker only: add --workers 1")  # fmt: skip
            return 2
        if not _preflight(job, set_flags=False):
            return REFUSED
        from engine.cli.progress import TerminalProgress
        from engine.train.run_local import resume_local

        stop = threading.Event()
        _stop_on_sigint(stop)
        return _report(resume_local(run_dir, TerminalProgress(), stop))
    return _run_job(job, resume_from=run_dir)[1]


def _trained_in_one_process(run_dir: Path) -> bool:
    """Was the newest checkpoint written by engine.train's one-process trainer? The engine's
    checkpoints record the worker count they were saved from (``world``)."""
    import json

    from engine.train.checkpoint import META_FILE, list_checkpoints

    found = list_checkpoints(run_dir)
    if not found:
        return False  # the engine says there is nothing to resume, with its own message
    try:
        meta = json.loads((found[0] / META_FILE).read_text())
    except (OSError, ValueError):
        return False
    return "world" not in meta


def cmd_inspect_data(args: argparse.Namespace) -> int:
    from engine.data import inspect_dataset

    tokenizer = None
    if args.model:
        from engine.model import load_tokenizer

        tokenizer = load_tokenizer(args.model)
    report = inspect_dataset(
        args.path, fmt=args.format, tokenizer=tokenizer, max_seq_len=args.max_seq_len
    )
    _out(report.format_text())
    return 1 if report.has_errors else 0


def cmd_inspect_model(args: argparse.Namespace) -> int:
    from engine.model import estimate_memory, inspect_model

    if _is_hub_id(args.path):  # described from the Hub (or the cache) before any download
        from engine.model.hub import inspect_remote

        remote = inspect_remote(args.path)
        info = remote.info
        _out(remote.format_text())
    else:
        info = inspect_model(args.path)
        _out(info.format_text())
    job = JobSpec.load(args.job) if args.job else JobSpec()
    est = estimate_memory(info, job, workers=max(1, job.dist.workers))
    _out(est.format_text())
    from engine.model.fit import check_fit

    problems = check_fit(info, job)
    for p in problems:
        _out(f"{p.level}: {p}")
    return 1 if any(p.level == "error" for p in problems) else 0


def _is_hub_id(path: str) -> bool:
    from engine.config import resolve_model_path
    from engine.model.load import looks_like_local_path

    resolved = resolve_model_path(path)
    return not Path(resolved).expanduser().exists() and not looks_like_local_path(resolved)


def cmd_models(args: argparse.Namespace) -> int:
    from engine.cli.models_cmd import models_main

    return models_main()


def cmd_pull(args: argparse.Namespace) -> int:
    from engine.cli.models_cmd import pull_main

    return pull_main(args.repo_id, args.revision)


def cmd_app(args: argparse.Namespace) -> int:
    # The engine never imports the app: the app plugs itself in through an entry point.
    from importlib.metadata import entry_points

    found = entry_points(group="orchard.commands", name="app")
    if not found:
        _err("the desktop app is not installed (pip install -e . from the Orchard folder)")
        return 2
    app_main = next(iter(found)).load()
    return int(app_main(["orchard app", *args.app_args]) or 0)


def cmd_worker(args: argparse.Namespace) -> int:
    """Every flag after `worker` goes to the worker's own parser (one list of options)."""
    from engine.worker.__main__ import main as worker_main

    return int(worker_main(args.worker_args) or 0)


def cmd_export(args: argparse.Namespace) -> int:
    from engine.cli.export_cmd import export_main

    return export_main(args.run_dir, args.format, args.out, dequantize=args.dequantize)


def cmd_pair(args: argparse.Namespace) -> int:
    from engine.cli.pair_cmd import pair_main

    return pair_main(args.target, args.code)


def cmd_discover(args: argparse.Namespace) -> int:
    from engine.cli.discover import discover_main

    return discover_main(timeout_s=args.timeout, watch=args.watch)


def cmd_status(args: argparse.Namespace) -> int:
    from engine.cli.attach_cmd import status_main

    return status_main()


def cmd_attach(args: argparse.Namespace) -> int:
    from engine.cli.attach_cmd import attach_main

    return attach_main(stop=args.stop)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="orchard",
        description="Fine-tune language models with LoRA/QLoRA on a cluster of Macs.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = p.add_subparsers(dest="command", required=True)

    def add(
        name: str, fn: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        return sp

    s = add("app", cmd_app, "open the desktop app")
    s.add_argument(
        "app_args", nargs=argparse.REMAINDER, help="passed to the app (see orchard app --help)"
    )

    s = add("demo", cmd_demo, "train the bundled demo end to end on this machine")
    s.add_argument("--steps", type=int, help="optimizer steps (default: the demo's own, 150)")
    s.add_argument("--out", help=f"folder for the run folder (default: {JobSpec().run.out_dir})")
    s.add_argument(
        "--workers", type=int, default=JobSpec().dist.workers, help="local worker processes"
    )
    s.add_argument("--mode", choices=DIST_MODES, default=JobSpec().dist.mode)
    s.add_argument(
        "--set", action="append", metavar="SECTION.KEY=VALUE", help="override any job setting"
    )
    s.add_argument("--no-sample", action="store_true", help="skip the before/after generation")

    s = add("train", cmd_train, "train from a job file (TOML); flags override its fields")
    s.add_argument("job", nargs="?", help="job.toml (defaults to the built-in job)")
    s.add_argument(
        "--set", action="append", metavar="SECTION.KEY=VALUE", help="override any job setting"
    )
    s.add_argument("--steps", type=int)
    s.add_argument("--workers", type=int)
    s.add_argument("--mode", choices=DIST_MODES)
    s.add_argument("--out")
    s.add_argument("--data")
    s.add_argument("--model")

    s = add("resume", cmd_resume, "continue a stopped run from its last checkpoint")
    s.add_argument("run_dir")
    s.add_argument("--workers", type=int, help="resume onto a different number of local workers")

    s = add(
        "inspect-data", cmd_inspect_data, "check a dataset: format, statistics and every problem"
    )
    s.add_argument("path")
    s.add_argument(
        "--format",
        default="auto",
        choices=("auto", "alpaca", "sharegpt", "chat", "completion", "text"),
    )
    s.add_argument("--model", help="tokenize with this model's tokenizer for token statistics")
    s.add_argument("--max-seq-len", type=int, default=JobSpec().data.max_seq_len)

    s = add("inspect-model", cmd_inspect_model, "describe a model without loading its weights")
    s.add_argument("path", help="a model folder, or a Hugging Face id (read before downloading)")
    s.add_argument("--job", help="job.toml for the memory estimate")

    add("models", cmd_models, "list the models in the Hugging Face cache")
    s = add("pull", cmd_pull, "download a Hugging Face model into the cache (resumes)")
    s.add_argument("repo_id", metavar="ID", help="e.g. mlx-community/Qwen2.5-0.5B-Instruct-4bit")
    s.add_argument("--revision", help="branch, tag or commit (default: main)")

    add("worker", cmd_worker, "run the worker agent on this machine (orchard worker --help)")

    s = add("export", cmd_export, "export a run's adapter for other tools")
    s.add_argument("run_dir")
    s.add_argument("--format", choices=("mlx", "peft", "fused"), default="mlx")
    s.add_argument("--out", required=True, help="a new (or empty) folder")
    s.add_argument(
        "--dequantize", action="store_true", help="fused: save a QLoRA base in full precision"
    )

    s = add("pair", cmd_pair, "pair with a worker using the code it shows")
    s.add_argument("target", metavar="HOST[:PORT]", help="the worker (default port 50051)")
    s.add_argument("--code", help="the pairing code (asked for when not given)")

    plan_cmd.add_parser(add)

    add("status", cmd_status, "the background engine and its run (the app's runs go there)")
    s = add("attach", cmd_attach, "follow the background engine's run live (Ctrl-C detaches)")
    s.add_argument("--stop", action="store_true", help="ask it to stop with a checkpoint first")

    s = add("discover", cmd_discover, "list Orchard workers on the local network")
    s.add_argument("--timeout", type=float, default=3.0)
    s.add_argument("--watch", action="store_true")
    return p


def console_handler(verbose: bool) -> logging.Handler:
    """The terminal shows warnings (or everything with -v); a run's own log.txt keeps INFO.
    Records the progress view already prints from their events are left out."""
    console = logging.StreamHandler()
    console.setLevel(logging.DEBUG if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    console.addFilter(lambda record: not getattr(record, "shown_as_event", False))
    return console


def main(argv: list[str] | None = None) -> int:
    keep_torch_out()  # before anything imports transformers (engine/no_torch.py)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["app"]:
        # Everything after `app` belongs to the app (argparse's REMAINDER drops leading flags).
        args = argparse.Namespace(fn=cmd_app, app_args=argv[1:], verbose=False)
    elif argv[:1] == ["worker"]:  # likewise, the worker's own options
        args = argparse.Namespace(fn=cmd_worker, worker_args=argv[1:], verbose=False)
    else:
        args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        handlers=[console_handler(args.verbose)],
    )
    try:
        return int(args.fn(args) or 0)
    except ConfigError as e:
        for problem in e.problems:
            _err(problem)
        return 2
    except KeyboardInterrupt:
        _err("aborted")
        return 130
    except BrokenPipeError:  # e.g. `orchard inspect-model X | head`
        return 0
    except (FileNotFoundError, NotADirectoryError, PermissionError, ValueError) as e:
        _err(str(e))
        return 2


if __name__ == "__main__":
    sys.exit(main())
