"""Run lm-eval's *own* task definitions on the local benchmark files, to cross-check pudding against lm-eval.

lm-eval's task YAMLs read hub datasets, which this machine cannot reach. Instead of re-implementing them, we write
the records in the hub's schema to a JSONL file and a two-line YAML that ``include``s the installed task YAML and
swaps only the data source (``dataset_path: json`` + ``data_files``). Prompts, choices, targets and metrics stay
lm-eval's, so an agreement with pudding is evidence, not a tautology.

The original files are read here directly (not through :mod:`pudding.core.tasks`) for the same reason: the only pudding
code a cross-check relies on is the item order of :func:`pudding.core.tasks.load_split`, used to pick the records of the
items pudding evaluates, and :func:`check_same_requests` verifies that choice against lm-eval's own prompts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pudding.core.scoring import Score, Scorer

Record = dict[str, Any]


class RecordingScorer(Scorer):
    """A :class:`Scorer` that keeps the per-request scores of its last run.

    ``evaluate_items`` returns only accuracies; keeping the scores lets one pass give both the accuracy and the
    per-request log-likelihoods that are compared with lm-eval's.
    """

    last_scores: list[Score]

    def run(self, *args: Any, **kwargs: Any) -> tuple[list[Score], dict]:
        scores, captured = super().run(*args, **kwargs)
        self.last_scores = scores
        return scores, captured


def _read_jsonl(path: Path) -> list[Record]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def piqa_records(data_dir: str | os.PathLike[str]) -> list[Record]:
    """PIQA validation in the hub schema (goal, sol1, sol2, label): ``valid.jsonl`` zipped with its label file."""
    root = Path(data_dir) / "piqa"
    records = _read_jsonl(root / "valid.jsonl")
    labels = [int(line) for line in (root / "valid-labels.lst").read_text().split()]
    if len(labels) != len(records):
        raise ValueError(f"{root}: {len(records)} records but {len(labels)} labels")
    return [
        {"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"], "label": y}
        for r, y in zip(records, labels, strict=True)
    ]


def _arc_records(path: Path) -> list[Record]:
    """ARC in the hub schema: the nested ``question.stem``/``question.choices`` flattened as ``allenai/ai2_arc``."""
    out = []
    for r in _read_jsonl(path):
        choices = r["question"]["choices"]
        out.append(
            {
                "id": r["id"],
                "question": r["question"]["stem"],
                "choices": {"text": [c["text"] for c in choices], "label": [c["label"] for c in choices]},
                "answerKey": r["answerKey"],
            }
        )
    return out


def _winogrande_records(path: Path) -> list[Record]:
    """WinoGrande's original records already are the hub schema (sentence, option1, option2, answer "1"/"2")."""
    keys = ("sentence", "option1", "option2", "answer")
    return [{k: r[k] for k in keys} for r in _read_jsonl(path)]


def _boolq_records(path: Path) -> list[Record]:
    """BoolQ as SuperGLUE publishes it: passage prefixed by ``title -- ``, the boolean answer as label 0/1."""
    return [
        {"idx": i, "question": r["question"], "passage": f"{r['title']} -- {r['passage']}", "label": int(r["answer"])}
        for i, r in enumerate(_read_jsonl(path))
    ]


@dataclass(frozen=True)
class LocalTask:
    """How to point one lm-eval task at local files: its installed YAML, the split it evaluates, the reader."""

    yaml: str  # relative to lm_eval/tasks
    split: str  # the split lm-eval evaluates for this task (its test split if set, else validation)
    read: Callable[[Path], list[Record]]  # data_dir -> the split's records in file order, hub schema


LOCAL_TASKS: dict[str, LocalTask] = {
    "piqa": LocalTask("piqa/piqa.yaml", "validation", piqa_records),
    "arc_easy": LocalTask("arc/arc_easy.yaml", "test", lambda d: _arc_records(d / "arc_easy/ARC-Easy-Test.jsonl")),
    "arc_challenge": LocalTask(
        "arc/arc_challenge.yaml", "test", lambda d: _arc_records(d / "arc_challenge/ARC-Challenge-Test.jsonl")
    ),
    "winogrande": LocalTask(
        "winogrande/default.yaml", "validation", lambda d: _winogrande_records(d / "winogrande/dev.jsonl")
    ),
    "boolq": LocalTask("super_glue/boolq/default.yaml", "validation", lambda d: _boolq_records(d / "boolq/dev.jsonl")),
}
"""Tasks lm-eval can run from /work/shared/data. HellaSwag is missing: only a derived text copy of it is there."""


def lmeval_task_name(task: str) -> str:
    """Name of the local variant, distinct from the installed task so the two can never be confused."""
    return f"{task}_local"


def eval_records(task: str, data_dir: str | os.PathLike[str]) -> list[Record]:
    """All records of the split lm-eval evaluates for ``task``, in file order, in the hub schema."""
    return LOCAL_TASKS[task].read(Path(data_dir))


def records_for_items(task: str, items: Sequence[Any], data_dir: str | os.PathLike[str]) -> list[Record]:
    """The raw records behind pudding ``items`` (a subset of ``load_split``'s output, e.g. ``eval_items``)."""
    from pudding.core.tasks import get_task, load_split

    records = eval_records(task, data_dir)
    every = load_split(task, get_task(task).eval_split, str(data_dir))
    if len(every) != len(records):
        raise ValueError(f"{task}: pudding reads {len(every)} items but there are {len(records)} records")
    row = {item.item_id: i for i, item in enumerate(every)}
    return [records[row[item.item_id]] for item in items]


def write_local_task(task: str, records: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike[str]) -> Path:
    """Write ``records`` and a YAML that reuses lm-eval's installed config for ``task``; return the YAML's path.

    The YAML keeps every key of lm-eval's config except the data source and the splits; the datasets cache goes
    into ``out_dir`` too, so nothing is left behind in ``~/.cache``.
    """
    import lm_eval

    spec = LOCAL_TASKS[task]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = out / f"{task}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    config = {
        "include": str(Path(lm_eval.__file__).parent / "tasks" / spec.yaml),
        "task": lmeval_task_name(task),
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {spec.split: str(data)}, "cache_dir": str(out / "hf_cache")},
        "training_split": None,
        "validation_split": spec.split if spec.split == "validation" else None,
        "test_split": spec.split if spec.split == "test" else None,
        "fewshot_split": None,
        "tag": [],
    }
    path = out / f"{lmeval_task_name(task)}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def task_manager(*yaml_dirs: str | os.PathLike[str]):
    """An lm-eval TaskManager that indexes only our local YAMLs (indexing all of lm-eval's takes seconds)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=False, include_path=[str(d) for d in yaml_dirs])


def run_lmeval(lm: Any, tasks: Sequence[str], manager: Any) -> dict[str, Any]:
    """``lm_eval.simple_evaluate`` zero-shot on the local variants of ``tasks``, with per-sample logs, no bootstrap."""
    import lm_eval

    return lm_eval.simple_evaluate(
        model=lm,
        tasks=[lmeval_task_name(t) for t in tasks],
        task_manager=manager,
        log_samples=True,
        bootstrap_iters=0,
    )


def task_result(results: Mapping[str, Any], task: str) -> dict[str, Any]:
    """acc / acc_norm / n of one task from lm-eval's results, in pudding's key names."""
    res = results["results"][lmeval_task_name(task)]
    out = {"acc": res["acc,none"], "n": len(results["samples"][lmeval_task_name(task)])}
    if "acc_norm,none" in res:
        out["acc_norm"] = res["acc_norm,none"]
    return out


def samples(results: Mapping[str, Any], task: str) -> list[dict[str, Any]]:
    """lm-eval's per-document logs of ``task``, in document order."""
    return sorted(results["samples"][lmeval_task_name(task)], key=lambda s: s["doc_id"])


def request_loglikelihoods(results: Mapping[str, Any], task: str) -> list[list[float]]:
    """Per document, the log-likelihood lm-eval's model returned for each choice's request."""
    return [[float(resp[0]) for resp in s["filtered_resps"]] for s in samples(results, task)]


def check_same_requests(results: Mapping[str, Any], task: str, items: Sequence[Any]) -> list[str]:
    """Items whose (context, continuation) requests differ from the ones lm-eval built; empty when all agree."""
    logged = samples(results, task)
    if len(logged) != len(items):
        return [f"lm-eval evaluated {len(logged)} documents, pudding {len(items)} items"]
    bad = []
    for s, item in zip(logged, items, strict=True):
        theirs = [tuple(arg[:2]) for arg in s["arguments"]]
        if theirs != [tuple(r) for r in item.requests]:
            bad.append(f"{item.item_id}: lm-eval {theirs!r} != pudding {list(item.requests)!r}")
    return bad
