"""`python -m engine.service`: the engine process (see engine/service/process.py)."""

import sys

from engine.service.process import main

if __name__ == "__main__":
    sys.exit(main())
