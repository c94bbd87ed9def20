"""Write resources/datasets/orchard_robot.jsonl: the demo dataset (Alpaca format).

Stories about Pip, a small robot who lives in an apple orchard, in the short, simple
sentences of TinyStories, so the bundled stories260K model visibly learns them in a few
minutes. Deterministic: the same seed writes the same file byte for byte.

    python scripts/make_demo_dataset.py [--seed 0] [--count 360] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "resources" / "datasets" / "orchard_robot.jsonl"

NAMES = ["Lily", "Tom", "Sue", "Ben", "Mia", "Max", "Anna", "Tim", "Lucy", "Sam"]
COLORS = ["red", "green", "yellow", "big red", "shiny red", "little green"]
NUMBERS = ["two", "three", "four", "five", "six", "ten"]

OPENINGS = [
    "Once upon a time, there was a small robot named Pip.",
    "Pip was a little robot who lived in an apple orchard.",
    "In a big apple orchard, there lived a small robot named Pip.",
    "Pip the robot lived in an orchard full of apple trees.",
    "Once upon a time, in a sunny orchard, there was a kind robot named Pip.",
]
ORCHARD = [
    "The orchard had many tall trees with red apples.",
    "The apple trees in the orchard were big and green.",
    "The orchard was Pip's home, and he loved every tree.",
    "Pip knew every apple tree in the orchard.",
]
MORNING = [
    "Every morning, Pip woke up when the sun came up.",
    "In the morning, Pip said hello to all the apple trees.",
    "When the sun came up, Pip rolled out of his little shed.",
    "In the morning, Pip took his basket and his ladder.",
]
WORK = [
    "Pip took his ladder and climbed up a tall apple tree.",
    "He picked {n} {c} apples and put them in his basket.",
    "Pip gave water to the trees so the apples could grow big.",
    "The bees buzzed around the flowers, and Pip waved at them.",
    "A little bird sat on Pip's head and sang a song.",
    "Pip counted the apples in his basket. One, two, three!",
    "Pip carried the heavy basket to the farmer.",
]
EVENTS = {
    "wind": (
        "One day, a big wind came and many apples fell on the grass.",
        "Pip picked up every apple and put them in his basket.",
        'The farmer was very happy and said, "Good job, Pip!"',
    ),
    "friend": (
        "One day, Pip saw a little girl named {name} in the orchard.",
        "{name} wanted an apple, but the tree was too tall.",
        'Pip climbed his ladder and gave her a {c} apple. {name} smiled and said, "Thank you, Pip!"',
    ),
    "bee": (
        "One day, Pip found a sad little bee on the ground.",
        "The bee was tired and could not fly.",
        "Pip put the bee on a flower near an apple tree. Soon the bee was happy and flew away.",
    ),
    "ladder": (
        "One day, Pip's ladder broke.",
        "Pip was sad because he could not reach the apples.",
        "The farmer helped Pip fix the ladder, and Pip picked {n} {c} apples.",
    ),
    "rain": (
        "One day, it started to rain in the orchard.",
        "Pip did not like the rain, so he hid under a big apple tree.",
        "When the rain stopped, the apples were clean and shiny, and Pip was happy.",
    ),
    "bird": (
        "One day, a little bird lost its nest in an apple tree.",
        "The bird was scared and cried.",
        "Pip climbed up his ladder and put the nest back. The bird sang a happy song for Pip.",
    ),
    "dog": (
        "One day, a big dog ran into the orchard.",
        "The dog wanted to eat the apples in Pip's basket.",
        "Pip gave the dog one {c} apple, and they became best friends.",
    ),
}
TOPIC_ASKS = {
    "wind": "Tell me a story about Pip and the big wind.",
    "friend": "Tell me a story about Pip and {name}.",
    "bee": "Tell me a story about Pip and a bee.",
    "ladder": "Tell me a story about Pip's ladder.",
    "rain": "Tell me a story about Pip on a rainy day.",
    "bird": "Tell me a story about Pip and a little bird.",
    "dog": "Tell me a story about Pip and a dog.",
}
ENDINGS = [
    "At night, Pip went to sleep under his favorite apple tree.",
    "Pip loved the orchard, and the orchard loved Pip.",
    "From that day on, Pip was the happiest robot in the orchard.",
    "Then Pip looked at a shiny apple and smiled, because robots can not eat apples.",
    "The sun went down, and Pip the robot smiled at his apple trees.",
]
STORY_ASKS = [
    "Tell me a story about Pip.",
    "Write a short story about Pip the robot.",
    "Tell me a story about the robot in the apple orchard.",
    "Can you tell me a story about Pip?",
    "Tell me a story about a little robot.",
]
QUESTIONS = {
    "What does Pip do in the morning?": (MORNING, WORK),
    "What does Pip do all day?": (WORK, WORK),
    "Who is Pip?": (
        [
            "Pip is a small robot who lives in an apple orchard.",
            "Pip is a kind little robot. He lives in a big apple orchard.",
        ],
        ORCHARD + WORK,
    ),
    "Where does Pip live?": (
        [
            "Pip lives in a big apple orchard.",
            "Pip the robot lives in an orchard with many apple trees.",
        ],
        ORCHARD,
    ),
    "What does Pip like?": (
        [
            "Pip likes {c} apples, tall trees and happy bees.",
            "Pip the robot likes the apple orchard more than anything.",
        ],
        WORK,
    ),
    "What does Pip do at night?": (
        [
            "At night, Pip goes to his little shed in the orchard.",
            "When the sun goes down, Pip puts his basket of apples away.",
        ],
        ["He says good night to the apple trees.", *ENDINGS[:2]],
    ),
}
INPUTS = [
    "The story should have a {c} apple in it.",
    "Make it short and happy.",
    "Use the name {name}.",
    "The story is for a small child.",
]


def fill(text: str, rng: random.Random, name: str) -> str:
    return text.format(n=rng.choice(NUMBERS), c=rng.choice(COLORS), name=name)


def story(rng: random.Random) -> dict[str, str]:
    topic = rng.choice(sorted(EVENTS))
    name = rng.choice(NAMES)
    extra = rng.choice(INPUTS) if rng.random() < 0.15 else ""
    if "{name}" in extra and topic != "friend":
        extra = ""
    work = [] if extra.startswith("Make it short") else rng.sample(WORK, rng.randint(0, 2))
    parts = [rng.choice(OPENINGS), rng.choice(ORCHARD + MORNING), *work, *EVENTS[topic]]
    color = rng.choice(COLORS)
    if "{c}" in extra:  # honour the request in the input
        extra = extra.replace("{c}", color)
        parts.append(f"Pip kept one {color} apple in his basket for a friend.")
    parts.append(rng.choice(ENDINGS))
    ask = TOPIC_ASKS[topic] if topic == "friend" else rng.choice([TOPIC_ASKS[topic], *STORY_ASKS])
    output = ensure(" ".join(fill(p, rng, name) for p in parts), rng)
    return {"instruction": fill(ask, rng, name), "input": fill(extra, rng, name), "output": output}


def ensure(text: str, rng: random.Random) -> str:
    """Every answer names Pip, the robot, the orchard and apples: the visible lesson."""
    if "orchard" not in text:
        text += " " + rng.choice(ORCHARD)
    if "apple" not in text:
        text += " Pip loves the apples in the orchard."
    if "robot" not in text:
        text += " Pip is a happy little robot."
    return text


def answer(rng: random.Random) -> dict[str, str]:
    question = rng.choice(sorted(QUESTIONS))
    first, rest = QUESTIONS[question]
    name = rng.choice(NAMES)
    parts = [rng.choice(first), *rng.sample(rest, min(len(rest), rng.randint(2, 3)))]
    text = ensure(" ".join(fill(p, rng, name) for p in parts), rng)
    return {"instruction": question, "input": "", "output": text}


def make(seed: int, count: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[dict[str, str]] = []
    while len(out) < count:
        rec = story(rng) if rng.random() < 0.6 else answer(rng)
        key = json.dumps(rec, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(rec)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--count", type=int, default=360)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r, ensure_ascii=False) for r in make(args.seed, args.count)]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
