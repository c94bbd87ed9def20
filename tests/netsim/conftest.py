"""The link harness needs root, iproute2, iptables-legacy, libnetfilter-queue and gcc
(scripts/setup.sh --dev); tests skip, naming what is missing, where it cannot run."""

from __future__ import annotations

import pytest

from bench.netsim.system import HarnessError, leftovers, require


@pytest.fixture(autouse=True)
def harness():
    try:
        require()
    except HarnessError as e:
        pytest.skip(str(e))
    before = set(leftovers())
    yield
    left = set(leftovers()) - before
    assert not left, f"the harness left {sorted(left)}"
