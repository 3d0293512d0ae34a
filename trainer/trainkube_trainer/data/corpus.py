"""The built-in corpora: small, generated (never downloaded), deterministic.

- tiny-stories: short stories from a grammar of characters, places and events, as plain text.
  Regular enough that a tiny model's loss falls within a few dozen steps.
- tiny-instructions: prompt/response pairs of one task the pre-trained model cannot do but a
  short LoRA fine-tune learns: a one-sentence story in the corpus's words, a question, and the
  one-word answer copied from the story ("Mia the cat found a kite in the forest. What did Mia
  find? " -> "kite").
- tiny-eval: held-out items of the same task, as exact-match items (prompt/answer) and
  multiple-choice items (question/choices/answer index). Their (name, thing) pairs never occur
  in tiny-instructions, so answering them takes reading the story, not recalling an item.
"""

from __future__ import annotations

import random
from typing import Any

NAMES = ["Mia", "Tom", "Ada", "Leo", "Zoe", "Sam", "Ivy", "Max", "Eli", "Noa"]
ANIMALS = ["cat", "dog", "fox", "owl", "bear", "frog", "duck", "goat"]
PLACES = ["forest", "village", "garden", "river", "hill", "farm", "town", "lake"]
THINGS = ["ball", "kite", "book", "hat", "cake", "boat", "drum", "key"]
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


def _fact(name: str, thing: str, place: str, feeling: str) -> dict[str, str]:
    """One instruction item: a one-sentence story and a question whose answer is copied from
    it. The story is written the way the pre-training corpus writes its sentences; the question
    and the one-word answer (then end-of-sequence) are what the fine-tune teaches."""
    return {
        "prompt": f"{name} was {feeling} in the {place}. {name} found a {thing}. "
        f"What did {name} find? ",
        "response": thing,
    }


def held_out(name: str, thing: str) -> bool:
    """Whether a (name, thing) pair belongs to the evaluation split: 16 of the 80 pairs, each
    name with one or two things and each thing with two names. No training item pairs them, so
    an evaluated item can only be answered by reading its story, not by recalling one."""
    return (NAMES.index(name) + THINGS.index(thing)) % 5 == 0


def _facts(rng: random.Random, count: int, *, evaluation: bool) -> list[dict[str, str]]:
    """`count` distinct items of one split, in a seeded order."""
    combos = [
        (name, thing, place, feeling)
        for name in NAMES
        for thing in THINGS
        for place in PLACES
        for feeling in FEELINGS
        if held_out(name, thing) == evaluation
    ]
    return [_fact(*combo) for combo in rng.sample(combos, count)]


def tiny_instructions(count: int = 2000, seed: int = 1) -> list[dict[str, Any]]:
    """The training split (4,096 distinct items): what did <name> find? -> <thing>."""
    return _facts(random.Random(seed), count, evaluation=False)


def tiny_eval(count: int = 200, seed: int = 2) -> list[dict[str, Any]]:
    """The evaluation split (1,024 distinct items, none in tiny-instructions), as exact-match
    items (prompt/answer) and multiple-choice items (question/choices/answer index: the thing
    found and three other things)."""
    rng = random.Random(seed)
    items = []
    for pair in _facts(rng, count, evaluation=True):
        wrong = rng.sample([t for t in THINGS if t != pair["response"]], 3)
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
