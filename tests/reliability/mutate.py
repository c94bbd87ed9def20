"""Seeded mutations of valid files: byte flips, truncations, splices (a pure function of a seed)."""

from __future__ import annotations

import random

# Bytes that matter to JSON, UTF-8 and line splitting, besides random ones.
INTERESTING = b'{}[]",:\\\n\r\x00\xff\xc3\xef\xbb\xbf \t0-e'


def flip(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(b))
        b[i] = rng.choice(INTERESTING) if rng.random() < 0.6 else rng.randrange(256)
    return bytes(b)


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data))]


def splice(a: bytes, b: bytes, rng: random.Random) -> bytes:
    """The head of one valid file joined to the tail of another (maybe of another format)."""
    return a[: rng.randrange(len(a) + 1)] + b[rng.randrange(len(b) + 1) :]


def mutants(seeds: dict[str, bytes], per_seed: int, seed: int) -> list[tuple[str, bytes]]:
    """``per_seed`` mutants of every seed, each named after the seed it keeps the suffix of."""
    rng = random.Random(seed)
    names = sorted(seeds)
    out: list[tuple[str, bytes]] = []
    for name in names:
        for i in range(per_seed):
            kind = ("flip", "truncate", "splice")[i % 3]
            data = seeds[name]
            if kind == "flip":
                data = flip(data, rng)
            elif kind == "truncate":
                data = truncate(data, rng)
            else:
                data = splice(data, seeds[rng.choice(names)], rng)
            out.append((f"{kind}{i}-{name}", data))
    return out
