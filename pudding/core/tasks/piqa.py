"""PIQA as lm-eval's ``piqa`` (``Question: {goal}\\nAnswer:``, choices sol1/sol2).

The original release keeps labels apart: ``{train,valid}.jsonl`` holds goal/sol1/sol2 and the matching
``{train,valid}-labels.lst`` one 0/1 per line. ``tests.jsonl`` has no labels, so there is no test split.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pudding.core.tasks.base import Item, TaskDataError, shared_context_item
from pudding.core.tasks.readers import at, bad_field, read_jsonl, read_text_lines, require, require_index
from pudding.core.tasks.task import Task


class Piqa(Task):
    name = "piqa"
    metrics = ("acc", "acc_norm")
    eval_split = "validation"
    hf_path = "baber/piqa"
    hf_name = None

    def local_sources(self, root: Path) -> dict[str, tuple[tuple[Path, ...], ...]]:
        return {
            "train": ((root / "train.jsonl", root / "train-labels.lst"),),
            "validation": ((root / "valid.jsonl", root / "valid-labels.lst"),),
        }

    def read_local(self, split: str, files: tuple[Path, ...]) -> Iterator[Item]:
        path, labels_path = files
        labels = read_text_lines(labels_path)
        records = list(read_jsonl(path))
        if len(records) != len(labels):
            first_unpaired = labels[len(records)][0] if len(labels) > len(records) else records[len(labels)][0]
            longer = labels_path if len(labels) > len(records) else path
            raise TaskDataError(
                f"{labels_path}: {len(labels)} labels for {len(records)} records in {path} "
                f"(first unpaired: {at(longer, first_unpaired)})"
            )
        for row, ((line_no, record), (label_line, label)) in enumerate(zip(records, labels, strict=True)):
            if label.strip() not in ("0", "1"):
                raise bad_field(at(labels_path, label_line), "label", f"should be 0 or 1, got {label!r}")
            yield self.doc_to_item({**record, "label": int(label)}, split, row, at(path, line_no))

    def doc_to_item(self, doc: Mapping[str, Any], split: str, row: int, where: str) -> Item:
        context = f"Question: {require(doc, 'goal', where)}\nAnswer:"
        choices = (require(doc, "sol1", where), require(doc, "sol2", where))
        return shared_context_item(self.name, f"{split}-{row}", context, choices, require_index(doc, "label", where, 2))
