"""ARC-Easy and ARC-Challenge, as lm-eval's ``arc_easy``/``arc_challenge`` (``Question: ...\\nAnswer:``).

Original files: ``ARC-{Easy,Challenge}-{Train,Dev,Test}.jsonl`` with ``question.stem`` and ``question.choices``
as a list of ``{text, label}``; the hub flattens these to ``question`` and ``choices.{text,label}``. Labels are
letters or, for a few items, digits; the answer index is the position of ``answerKey`` among them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pudding.core.tasks.base import Item, shared_context_item
from pudding.core.tasks.readers import bad_field, require, require_strings
from pudding.core.tasks.task import Task

_FILE_SPLITS = {"train": "Train", "validation": "Dev", "test": "Test"}


class _Arc(Task):
    """Shared by both ARC sets; they differ only in name and file prefix (which is the hub config name)."""

    metrics = ("acc", "acc_norm")
    eval_split = "test"
    hf_path = "allenai/ai2_arc"
    hf_name: str
    hub_splits = ("train", "validation", "test")

    def local_sources(self, root: Path) -> dict[str, tuple[tuple[Path, ...], ...]]:
        return {split: ((root / f"{self.hf_name}-{part}.jsonl",),) for split, part in _FILE_SPLITS.items()}

    def local_to_doc(self, record: Mapping[str, Any], where: str) -> Mapping[str, Any]:
        question = require(record, "question", where, dict)
        choices = require(question, "choices", f"{where}, question", list)
        if not all(isinstance(c, dict) for c in choices):
            raise bad_field(where, "question.choices", "should be a list of {text, label} objects")
        places = [f"{where}, question.choices[{i}]" for i in range(len(choices))]
        return {
            "id": require(record, "id", where),
            "question": require(question, "stem", f"{where}, question"),
            "choices": {
                "text": [require(c, "text", place) for c, place in zip(choices, places, strict=True)],
                "label": [require(c, "label", place) for c, place in zip(choices, places, strict=True)],
            },
            "answerKey": require(record, "answerKey", where),
        }

    def doc_to_item(self, doc: Mapping[str, Any], split: str, row: int, where: str) -> Item:
        choices = require(doc, "choices", where, dict)
        texts = require_strings(choices, "text", where)
        labels = require_strings(choices, "label", where)
        if len(labels) != len(texts):
            raise bad_field(where, "choices", f"has {len(texts)} texts but {len(labels)} labels")
        answer = require(doc, "answerKey", where)
        if answer not in labels:
            raise bad_field(where, "answerKey", f"{answer!r} is not one of the choice labels {labels}")
        context = f"Question: {require(doc, 'question', where)}\nAnswer:"
        return shared_context_item(self.name, require(doc, "id", where), context, texts, labels.index(answer))


class ArcEasy(_Arc):
    name = "arc_easy"
    hf_name = "ARC-Easy"


class ArcChallenge(_Arc):
    name = "arc_challenge"
    hf_name = "ARC-Challenge"
