"""What every zero-shot task looks like to the rest of pudding.

A task turns its raw records into :class:`Item` objects. An item is already in the shape the scoring engine
needs: one ``(context, continuation)`` request per choice, written exactly the way lm-eval's task config would
write it, so that our accuracy of a model equals lm-eval's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pudding.core.errors import PuddingError


@dataclass(frozen=True)
class Item:
    """One multiple-choice question, ready to score.

    ``requests[i]`` is the ``(context, continuation)`` pair lm-eval scores for choice ``i``; most tasks share one
    context across choices, WinoGrande shares one continuation across contexts. ``choices`` are the strings whose
    character lengths ``acc_norm`` divides by (lm-eval's ``doc_to_choice``). ``router_text`` is what a router may
    read: the prompt without any answer.
    """

    task: str
    item_id: str
    requests: tuple[tuple[str, str], ...]
    choices: tuple[str, ...]
    gold: int
    router_text: str

    def __post_init__(self) -> None:
        if len(self.requests) != len(self.choices):
            raise ValueError(
                f"{self.task}/{self.item_id}: {len(self.requests)} requests but {len(self.choices)} choices"
            )
        if not 0 <= self.gold < len(self.choices):
            raise ValueError(f"{self.task}/{self.item_id}: gold index {self.gold} outside 0..{len(self.choices) - 1}")


SPLITS = ("train", "validation", "test")
"""Split names every task understands; a task may lack some of them."""

TARGET_DELIMITER = " "
"""lm-eval's default ``target_delimiter``: put between context and continuation for every choice."""


class TaskDataError(PuddingError):
    """Raised for anything wrong with a task's data or name: the message says what, where and what exists."""


def shared_context_item(task: str, item_id: str, context: str, choices: Sequence[str], gold: int) -> Item:
    """An item whose choices all continue one context, as lm-eval builds ``multiple_choice`` requests.

    The router reads the context itself: it is the whole prompt minus the answer.
    """
    return Item(
        task=task,
        item_id=item_id,
        requests=tuple((context, TARGET_DELIMITER + choice) for choice in choices),
        choices=tuple(choices),
        gold=gold,
        router_text=context,
    )
