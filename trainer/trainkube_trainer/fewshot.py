"""Few-shot (in-context) prompts for the built-in exact-match and multiple-choice evaluations.

The solved examples come from a split of their own: another split of the hub dataset when the
spec names one, else a part of the shuffled examples set apart before any is scored. Each scored
item draws its examples from that split with a generator seeded by the job's seed and the item's
position, so a rerun (on any number of ranks) builds the same prompts, and no item is ever shown
to the model solved.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

DELIMITER = "\n\n"  # between examples, and before the scored item (lm-evaluation-harness's too)
POOL_FRACTION = 10  # without a separate split, one tenth of the examples is set apart

Record = dict[str, Any]


class FewShotError(ValueError):
    """There are too few examples to draw from; the message says how many there are."""


def set_apart(
    records: list[Record], *, num_few_shot: int, separate: list[Record] | None
) -> tuple[list[Record], list[Record]]:
    """(few-shot split, scored examples) from the shuffled `records`, or `separate` (the records
    of another split) as the few-shot split."""
    if num_few_shot == 0:
        return [], records
    if separate is not None:
        if len(separate) < num_few_shot:
            raise FewShotError(
                f"numFewShot is {num_few_shot} but fewShotSplit has only {len(separate)} examples"
            )
        return separate, records
    size = max(num_few_shot, len(records) // POOL_FRACTION)
    if len(records) - size < 1:
        raise FewShotError(
            f"numFewShot is {num_few_shot} but the data has only {len(records)} examples: set "
            f"apart {size} for the few-shot split, none would be left to score; use a smaller "
            "numFewShot, more data, or fewShotSplit"
        )
    return records[:size], records[size:]


def context(
    pool: list[Record],
    *,
    num_few_shot: int,
    seed: int,
    position: int,
    render: Callable[[Record], str],
) -> str:
    """The text before scored item number `position`: its examples, rendered and delimited."""
    if num_few_shot == 0:
        return ""
    examples = random.Random(seed * 1_000_003 + position).sample(pool, num_few_shot)
    return "".join(render(example) + DELIMITER for example in examples)


def answer_of(completion: str) -> str:
    """The answer in a completion after a few-shot prompt: up to the first blank line, where a
    model that learnt the pattern goes on to write the next example (lm-evaluation-harness
    stops its generation there too)."""
    return completion.split(DELIMITER, 1)[0]
