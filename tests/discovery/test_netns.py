"""Real multicast between two network namespaces: advertiser in one, browser in the other."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.netns

FP = "cd" * 32


def _event(change: str, worker_id: str, **want: object):
    def match(line: str) -> bool:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            return False
        peer = event["peer"]
        return (
            event["change"] == change
            and peer["worker_id"] == worker_id
            and all(peer.get(k) == v for k, v in want.items())
        )

    return match


def test_peer_appears_changes_and_leaves_across_namespaces(
    netns_pair, peer_processes, service_type
):
    browser = peer_processes(["browse", "--service-type", service_type], netns=netns_pair.b)
    browser.wait_for(lambda line: line == "ready", 20)
    adv = peer_processes(
        ["advertise", "--id", "w1", "--port", "5123", "--fp", FP, "--service-type", service_type],
        netns=netns_pair.a,
    )
    adv.wait_for(lambda line: line == "ready", 20)

    added = json.loads(browser.wait_for(_event("added", "w1"), 15))["peer"]
    assert added["addresses"] == [netns_pair.addr_a]
    assert added["port"] == 5123
    assert (added["chip"], added["memory_bytes"], added["fingerprint"]) == (
        "Apple M2 Ultra",
        192 << 30,
        FP,
    )
    assert (added["state"], added["paired"], added["valid"], added["host"]) == (
        "idle",
        False,
        True,
        "host-w1",
    )

    adv.send("state busy")
    browser.wait_for(_event("updated", "w1", state="busy"), 10)

    adv.send("stop")
    browser.wait_for(_event("removed", "w1"), 10)


@pytest.mark.slow  # waits out a TTL: about 11 s
def test_crashed_advertiser_expires_after_its_ttl(netns_pair, peer_processes, service_type):
    browser = peer_processes(["browse", "--service-type", service_type], netns=netns_pair.b)
    browser.wait_for(lambda line: line == "ready", 20)
    adv = peer_processes(
        ["advertise", "--id", "w2", "--port", "5124", "--ttl", "3", "--service-type", service_type],
        netns=netns_pair.a,
    )
    adv.wait_for(lambda line: line == "ready", 20)
    browser.wait_for(_event("added", "w2"), 15)
    # Still listed well past one TTL while alive: the browser re-asks before records expire.
    time.sleep(4.5)
    adv.proc.kill()  # no goodbye packet: only the TTL can remove it
    adv.proc.wait(timeout=10)
    browser.wait_for(_event("removed", "w2"), 15)


@pytest.mark.slow  # waits out a TTL, then a reconnect: about 15 s
def test_peer_lost_in_an_outage_expires_and_comes_back(netns_pair, peer_processes, service_type):
    browser = peer_processes(["browse", "--service-type", service_type], netns=netns_pair.b)
    browser.wait_for(lambda line: line == "ready", 20)
    adv = peer_processes(
        ["advertise", "--id", "w3", "--port", "5125", "--ttl", "3", "--service-type", service_type],
        netns=netns_pair.a,
    )
    adv.wait_for(lambda line: line == "ready", 20)
    browser.wait_for(_event("added", "w3"), 15)
    netns_pair.link("a", up=False)  # cable out: no goodbye, no answers
    browser.wait_for(_event("removed", "w3"), 15)
    netns_pair.link("a", up=True)
    back = json.loads(browser.wait_for(_event("added", "w3"), 20))["peer"]
    assert back["addresses"] == [netns_pair.addr_a]
