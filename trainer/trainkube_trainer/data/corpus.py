"""The built-in corpora: small, generated (never downloaded), deterministic.

- tiny-stories: short stories from a grammar of characters, places and events, as plain text.
  Regular enough that a tiny model's loss falls within a few dozen steps.
- tiny-instructions: prompt/response pairs (arithmetic, word reversal, colours, opposites).
- tiny-eval: exact-match items (prompt/answer) and multiple-choice items
  (question/choices/answer index) of the same kinds.
"""

from __future__ import annotations

import random
from typing import Any

NAMES = ["Mia", "Tom", "Ada", "Leo", "Zoe", "Sam", "Ivy", "Max", "Eli", "Noa"]
ANIMALS = ["cat", "dog", "fox", "owl", "bear", "frog", "duck", "goat"]
PLACES = ["forest", "village", "garden", "river", "hill", "farm", "town", "lake"]
THINGS = ["ball", "kite", "book", "hat", "cake", "boat", "drum", "key"]
COLOURS = {"sky": "blue", "grass": "green", "snow": "white", "sun": "yellow", "coal": "black"}
OPPOSITES = {"hot": "cold", "big": "small", "up": "down", "day": "night", "fast": "slow"}
FEELINGS = ["happy", "sad", "sleepy", "brave", "hungry"]


def tiny_stories(count: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    stories = []
    for _ in range(count):
        name, animal = rng.choice(NAMES), rng.choice(ANIMALS)
        place, thing = rng.choice(PLACES), rng.choice(THINGS)
        friend = rng.choice([n for n in NAMES if n != name])
        feeling = rng.choice(FEELINGS)
        text = (
            f"Once upon a time, {name} the {animal} lived in the {place}. "
            f"One day {name} found a {thing}. {name} was {feeling}. "
            f"{name} gave the {thing} to {friend}, and they played all day. The end."
        )
        stories.append({"text": text})
    return stories


def _instruction(rng: random.Random) -> dict[str, str]:
    kind = rng.randrange(4)
    if kind == 0:
        a, b = rng.randrange(10), rng.randrange(10)
        return {"prompt": f"What is {a} plus {b}? ", "response": str(a + b)}
    if kind == 1:
        word = rng.choice(NAMES + ANIMALS)
        return {"prompt": f"Reverse the word {word}: ", "response": word[::-1]}
    if kind == 2:
        thing = rng.choice(list(COLOURS))
        return {"prompt": f"What colour is the {thing}? ", "response": COLOURS[thing]}
    word = rng.choice(list(OPPOSITES))
    return {"prompt": f"The opposite of {word} is ", "response": OPPOSITES[word]}


def tiny_instructions(count: int = 2000, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [_instruction(rng) for _ in range(count)]


def tiny_eval(count: int = 200, seed: int = 2) -> list[dict[str, Any]]:
    """Items usable both as exact-match (prompt/answer) and multiple-choice (question/choices/
    answer)."""
    rng = random.Random(seed)
    items = []
    for _ in range(count):
        pair = _instruction(rng)
        wrong = sorted({_instruction(rng)["response"] for _ in range(6)} - {pair["response"]})[:3]
        choices = [pair["response"], *wrong]
        rng.shuffle(choices)
        items.append(
            {
                "prompt": pair["prompt"],
                "answer": pair["response"],
                "question": pair["prompt"],
                "choices": choices,
                "answer_index": choices.index(pair["response"]),
            }
        )
    return items


BUILTIN = {
    "tiny-stories": tiny_stories,
    "tiny-instructions": tiny_instructions,
    "tiny-eval": tiny_eval,
}
