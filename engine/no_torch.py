"""Keep PyTorch out of Orchard's processes.

Nothing in Orchard uses PyTorch: MLX computes, and the tokenizers are Hugging Face's, which
need none. But ``transformers`` imports ``torch`` at module level wherever it is installed
(``tokenization_utils_base``: ``if is_torch_available(): import torch``), and mlx-lm's
tokenizer wrapper imports ``transformers``. On a machine with PyTorch in the same
environment (common on a developer's Mac, and on the GPU machines of
``../shared/gpu.md``) every Orchard process then loads torch's libraries: seconds of start-up
on the CLI's critical path before the first step, and resident memory in every worker.

:func:`keep_torch_out` marks ``torch`` as absent (``sys.modules["torch"] = None``, which
Python's import system documents as "not importable"): ``importlib.util.find_spec`` then
answers None, so ``transformers.utils.is_torch_available()`` is False and the tokenizer loads
without it. Entry points call it first thing (the CLI, a worker, the engine service, the
app). ``ORCHARD_ALLOW_TORCH=1`` turns it off, for a custom tokenizer
(``trust_remote_code``) that needs torch.
"""

from __future__ import annotations

import os
import sys

ALLOW_ENV = "ORCHARD_ALLOW_TORCH"


def keep_torch_out() -> bool:
    """Mark torch as not importable in this process, unless it is already imported or
    ``ORCHARD_ALLOW_TORCH=1``; True when it did. Call it before anything imports
    ``transformers`` (``is_torch_available`` is read when its tokenizer module loads)."""
    if os.environ.get(ALLOW_ENV) == "1" or "torch" in sys.modules:
        return False
    sys.modules["torch"] = None  # type: ignore[assignment]  # import torch -> ModuleNotFoundError
    return True
