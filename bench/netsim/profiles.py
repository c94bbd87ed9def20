"""Link profiles for the harness, each with where its numbers come from.

``rate_mbit`` is the TCP goodput a single flow gets on that link (what iperf3 reports), not
the PHY rate; ``rtt_ms`` is the ping time between two Macs on it; ``jitter_ms`` spreads each
one-way delay uniformly by +- that much; ``loss`` is the share of 1500-byte segments lost
above the link layer (802.11 retransmits most losses itself, so what TCP sees is light).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LinkProfile:
    name: str
    rate_mbit: float
    rtt_ms: float
    jitter_ms: float = 0.0
    loss: float = 0.0
    source: str = ""

    @property
    def rate_bytes_s(self) -> float:
        return self.rate_mbit * 1e6 / 8


PROFILES: dict[str, LinkProfile] = {
    p.name: p
    for p in (
        LinkProfile(
            "thunderbolt",
            10_000,
            0.1,
            source="Thunderbolt bridge between two Macs: ~10 Gbit/s of TCP and ~0.1 ms ping "
            "(issue 12's figures; Thunderbolt 3/4 IP networking is commonly measured at "
            "10-20 Gbit/s with iperf3; 40 Gbit/s is the link's signalling rate, not its goodput)",
        ),  # fmt: skip
        LinkProfile(
            "10gbe",
            9_400,
            0.1,
            source="10GBASE-T: 10 Gbit/s line rate x 1448/1538 (TCP payload per Ethernet frame "
            "with timestamps) = 9.41 Gbit/s goodput; switched LAN ping ~0.05-0.15 ms",
        ),  # fmt: skip
        LinkProfile(
            "1gbe",
            940,
            0.2,
            source="1000BASE-T: 1 Gbit/s x 1448/1538 = 941 Mbit/s, what iperf3 reports on "
            "gigabit Ethernet; ~0.2 ms ping through a home switch (issue 12)",
        ),  # fmt: skip
        LinkProfile(
            "wifi6",
            500,
            3.0,
            jitter_ms=2.0,
            loss=2e-5,
            source="Wi-Fi 6 (802.11ax), 2x2 MIMO at 80 MHz: 1201 Mbit/s PHY, ~500 Mbit/s TCP "
            "in the same room; 3 ms ping with 2 ms jitter, light loss after 802.11 "
            "retransmission (issue 12)",
        ),  # fmt: skip
        LinkProfile(
            "wifi-congested",
            150,
            8.0,
            jitter_ms=3.0,
            loss=1e-4,
            source="busy or distant Wi-Fi: ~150 Mbit/s TCP, 8 ms ping (issue 12); jitter and "
            "loss set a little above wifi6's",
        ),  # fmt: skip
    )
}
