"""BoolQ in lm-eval's SuperGLUE form (``{passage}\\nQuestion: {question}?\\nAnswer:``, choices no/yes).

The original release (``train.jsonl``/``dev.jsonl``: question, title, answer as a bool, passage) becomes the
SuperGLUE record lm-eval reads with ``passage = title + " -- " + passage`` and ``label = int(answer)``; the
SuperGLUE validation split is exactly this conversion of ``dev.jsonl``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pudding.core.tasks.base import Item, shared_context_item
from pudding.core.tasks.readers import require, require_index
from pudding.core.tasks.task import Task

CHOICES = ("no", "yes")


class BoolQ(Task):
    name = "boolq"
    metrics = ("acc",)
    eval_split = "validation"
    hf_path = "aps/super_glue"
    hf_name = "boolq"

    def local_sources(self, root: Path) -> dict[str, tuple[tuple[Path, ...], ...]]:
        return {"train": ((root / "train.jsonl",),), "validation": ((root / "dev.jsonl",),)}

    def local_to_doc(self, record: Mapping[str, Any], where: str) -> Mapping[str, Any]:
        title = require(record, "title", where)
        return {
            "question": require(record, "question", where),
            "passage": f"{title} -- {require(record, 'passage', where)}",
            "label": int(require(record, "answer", where, bool)),
        }

    def doc_to_item(self, doc: Mapping[str, Any], split: str, row: int, where: str) -> Item:
        context = f"{require(doc, 'passage', where)}\nQuestion: {require(doc, 'question', where)}?\nAnswer:"
        gold = require_index(doc, "label", where, len(CHOICES))
        return shared_context_item(self.name, f"{split}-{row}", context, CHOICES, gold)
