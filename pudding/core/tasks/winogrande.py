"""WinoGrande as lm-eval's ``winogrande``: partial evaluation, one context per option, one shared continuation.

Each context is the sentence up to the blank with an option filled in; the continuation is the rest of the sentence
after the blank, stripped. Contexts are also the ``choices`` (lm-eval's ``doc_to_choice``; acc is the only metric).
Original files: ``dev.jsonl`` is the validation split (the hub's ``winogrande_xl`` validation). For train the hub
uses train_xl; locally the largest training size present is used, trying ``train_xl``, ``train_l``, ``train_m``,
``train_s``, ``train_xs`` in that order (the sizes are nested subsets). ``test.jsonl`` has no answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pudding.core.tasks.base import TARGET_DELIMITER, Item
from pudding.core.tasks.readers import bad_field, require
from pudding.core.tasks.task import Task

TRAIN_SIZES = ("xl", "l", "m", "s", "xs")
_ANSWERS = {"1": 0, "2": 1}


class WinoGrande(Task):
    name = "winogrande"
    metrics = ("acc",)
    eval_split = "validation"
    hf_path = "allenai/winogrande"
    hf_name = "winogrande_xl"

    def local_sources(self, root: Path) -> dict[str, tuple[tuple[Path, ...], ...]]:
        return {
            "train": tuple((root / f"train_{size}.jsonl",) for size in TRAIN_SIZES),
            "validation": ((root / "dev.jsonl",),),
        }

    def doc_to_item(self, doc: Mapping[str, Any], split: str, row: int, where: str) -> Item:
        sentence = require(doc, "sentence", where)
        blank = sentence.find("_")
        if blank < 0:
            raise bad_field(where, "sentence", f"has no blank '_': {sentence!r}")
        options = (require(doc, "option1", where), require(doc, "option2", where))
        answer = require(doc, "answer", where)
        if answer not in _ANSWERS:
            raise bad_field(where, "answer", f"should be '1' or '2', got {answer!r}")
        contexts = tuple(sentence[:blank] + option for option in options)
        continuation = TARGET_DELIMITER + sentence[blank + 1 :].strip()
        return Item(
            task=self.name,
            item_id=str(doc.get("qID") or f"{split}-{row}"),  # the hub copy has no qID
            requests=tuple((context, continuation) for context in contexts),
            choices=contexts,
            gold=_ANSWERS[answer],
            router_text=sentence,
        )
