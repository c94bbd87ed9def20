"""Entry script of the frozen Orchard bundle (PyInstaller runs this as __main__).

Orchard                 the desktop app
Orchard --selftest      import check + a tiny training step, exit 0 on success
Orchard -m MODULE ...   run a module, as `python -m` would: the engine starts local
                        workers with [sys.executable, "-m", "engine.worker", ...]
Orchard COMMAND ...     the `orchard` CLI (train, worker, demo, export, ...)
"""

from __future__ import annotations

import runpy
import sys


def main(argv: list[str]) -> int:
    if argv[:1] == ["--selftest"]:
        import selftest  # packaging/selftest.py, bundled as a top-level module

        return selftest.main(argv[1:])
    if argv[:1] == ["-m"] and len(argv) >= 2:
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        return 0
    from engine.cli.main import main as cli_main

    if not argv or argv[0].startswith("-psn_"):  # Finder passes a process serial number
        try:
            from app.main import main as app_main  # pyproject's "orchard.commands" app entry
        except ImportError as e:
            sys.stderr.write(f"orchard: this build has no desktop app ({e})\n")
            return 2
        return app_main(sys.argv[:1]) or 0  # drop a Finder -psn_ argument
    return cli_main(argv)


if __name__ == "__main__":
    import multiprocessing

    multiprocessing.freeze_support()
    sys.exit(main(sys.argv[1:]))
