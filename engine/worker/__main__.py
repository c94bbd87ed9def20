"""`python -m engine.worker --local`: one worker process (see engine/worker/agent.py)."""

import sys

from engine.worker.agent import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
