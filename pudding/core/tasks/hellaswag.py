"""HellaSwag as lm-eval's ``hellaswag``: the context and the four endings after lm-eval's WikiHow clean-up.

lm-eval's ``process_docs`` builds the query ``activity_label + ": " + ctx_a + " " + ctx_b.capitalize()`` and cleans
query and endings with :func:`preprocess`; the answer is ``label``. Original files are ``hellaswag_{train,val}.jsonl``
(same fields as the hub, label an int). When ``hellaswag_val.jsonl`` is absent, validation falls back to
``derived_llamacpp_format/hellaswag_val_full.txt``, see :meth:`HellaSwag.read_derived`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pudding.core.tasks.base import Item, TaskDataError, shared_context_item
from pudding.core.tasks.readers import at, bad_field, read_text_lines, require, require_index, require_strings
from pudding.core.tasks.task import Task

DERIVED_FILE = Path("derived_llamacpp_format") / "hellaswag_val_full.txt"
_DERIVED_LINES = ("context", "label", "ending 1", "ending 2", "ending 3", "ending 4")
_BRACKETED = re.compile(r"\[.*?\]")


def preprocess(text: str) -> str:
    """lm-eval's HellaSwag text clean-up: strip, turn `` [title]`` into a sentence break, drop ``[...]`` markers.

    Only one pass of double-space collapsing, as lm-eval does, so triple spaces survive as double ones.
    """
    text = text.strip().replace(" [title]", ". ")
    return _BRACKETED.sub("", text).replace("  ", " ")


class HellaSwag(Task):
    name = "hellaswag"
    metrics = ("acc", "acc_norm")
    eval_split = "validation"
    hf_path = "Rowan/hellaswag"
    hf_name = None

    def local_sources(self, root: Path) -> dict[str, tuple[tuple[Path, ...], ...]]:
        return {
            "train": ((root / "hellaswag_train.jsonl",),),
            "validation": ((root / "hellaswag_val.jsonl",), (root / DERIVED_FILE,)),
        }

    def read_local(self, split: str, files: tuple[Path, ...]) -> Iterator[Item]:
        if files[0].suffix == ".txt":
            return self.read_derived(split, files[0])
        return super().read_local(split, files)

    def doc_to_item(self, doc: Mapping[str, Any], split: str, row: int, where: str) -> Item:
        context = require(doc, "ctx_a", where) + " " + require(doc, "ctx_b", where).capitalize()
        endings = require_strings(doc, "endings", where)
        ind = doc.get("ind")
        return self._item(
            str(ind) if ind is not None else f"{split}-{row}",
            require(doc, "activity_label", where) + ": " + context,
            endings,
            require_index(doc, "label", where, len(endings)),
        )

    def read_derived(self, split: str, path: Path) -> Iterator[Item]:
        """Items from the llama.cpp-style text copy: 6 lines per item (context, gold 0-3, four endings).

        Its first line is ``activity_label: ctx`` with the author's own clean-up already applied; lm-eval's
        :func:`preprocess` is applied again on top. The text is close to, not identical with, lm-eval's: ``ctx_b`` is
        not capitalised (``... on a roof. he`` where lm-eval has ``... on a roof. He``), and the author's clean-up
        differs in places from lm-eval's. Accuracies from it are therefore close to, not exactly, lm-eval's. Item
        ids are ``validation-<n>`` since the file has no ``ind``.
        """
        lines = read_text_lines(path)
        width = len(_DERIVED_LINES)
        if len(lines) % width:
            start = lines[len(lines) - len(lines) % width][0]
            raise TaskDataError(
                f"{at(path, start)}: last item has {len(lines) % width} of {width} lines ({', '.join(_DERIVED_LINES)})"
            )
        for row in range(len(lines) // width):
            block = lines[row * width : (row + 1) * width]
            for (line_no, text), field in zip(block, _DERIVED_LINES, strict=True):
                if not text.strip():
                    raise bad_field(at(path, line_no), field, f"is blank (items are {width} lines each)")
            label_line, label = block[1]
            if label not in ("0", "1", "2", "3"):
                raise bad_field(at(path, label_line), "label", f"should be 0-3, got {label!r}")
            yield self._item(f"{split}-{row}", block[0][1], [text for _, text in block[2:]], int(label))

    def _item(self, item_id: str, query: str, endings: Sequence[str], gold: int) -> Item:
        return shared_context_item(self.name, item_id, preprocess(query), [preprocess(e) for e in endings], gold)
