"""packaging/launchd: the worker's LaunchAgent is a valid plist that runs `orchard worker`."""

from __future__ import annotations

import plistlib

from tests.discovery.conftest import ROOT


def test_launch_agent_runs_the_worker_as_the_user_and_restarts_it_after_a_crash():
    with open(ROOT / "packaging" / "launchd" / "org.orchard.worker.plist", "rb") as f:
        plist = plistlib.load(f)
    assert plist["Label"] == "org.orchard.worker"
    assert plist["ProgramArguments"][1:2] == ["worker"]
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] == {"SuccessfulExit": False}
    assert "UserName" not in plist  # a LaunchAgent: never root
    assert not any(
        "/tmp" in str(plist.get(k, "")) for k in ("StandardOutPath", "StandardErrorPath")
    )
