"""Keep Python's cycle collector from freezing the window.

A full collection walks every tracked object while holding the GIL, whichever thread starts
it. Once the app has imported Qt, pyqtgraph, MLX, mlx-lm and the runtime that is ~150k
objects and 200-400 ms on 2 busy cores: a visible freeze each time a full pass runs. Those
objects live as long as the app, so once loaded they are moved out of the collector's way.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

_frozen = False


def freeze_loaded_objects() -> None:
    """Exclude every object alive now from later collections; once per process (a second
    call would also pin whatever garbage cycles the first window left behind)."""
    global _frozen
    if _frozen:
        return
    _frozen = True
    gc.freeze()
    log.debug("%d long-lived objects moved out of the cycle collector", gc.get_freeze_count())
