"""Tests of the zero-shot task layer: parsing, hub conversion, equality with lm-eval, errors and the router split.

Fixture records are invented here and written to tmp_path in each benchmark's original format; the real data in
/work/shared/data is only read by the last test, which is skipped when it is absent.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from pudding.core.errors import OptionError
from pudding.core.tasks import (
    DEFAULT_TASKS,
    TASKS,
    DataOptions,
    Item,
    TaskDataError,
    clear_cache,
    eval_items,
    get_task,
    is_router_item,
    parse_task_list,
    router_items,
)

SHARED_DATA = Path(__file__).parents[1].parent / "shared" / "data"

# --------------------------------------------------------------------------- fixture records, original formats


def arc_record(qid: str, stem: str, texts: list[str], labels: list[str], answer: str) -> dict[str, Any]:
    choices = [{"text": t, "label": lab} for t, lab in zip(texts, labels, strict=True)]
    return {"id": qid, "question": {"stem": stem, "choices": choices}, "answerKey": answer}


ARC_TEST = [
    arc_record(
        "Q-1", "Which gas do plants take in?", ["oxygen", "carbon dioxide", "helium", "neon"], list("ABCD"), "B"
    ),
    arc_record("Q-2", "How many legs does a spider have?", ["six", "eight", "ten"], ["1", "2", "3"], "2"),
    arc_record(
        "Q-3",
        'In the note "{{ water }} boils", what boils?',
        ["ice", "steam", "water", "salt", "sand"],
        list("ABCDE"),
        "E",
    ),
]
ARC_TRAIN = [
    arc_record("T-1", "What melts ice?", ["heat", "cold"], list("AB"), "A"),
    arc_record("T-2", "What falls from clouds?", ["rain", "rocks", "cars", "chairs"], list("ABCD"), "A"),
]
ARC_DEV = [arc_record("D-1", "What do bees make?", ["honey", "milk", "silk", "wool"], list("ABCD"), "A")]

BOOLQ_DEV = [
    {
        "question": "is the sky blue on a clear day",
        "title": "Sky",
        "answer": True,
        "passage": "On a clear day the sky looks blue because air scatters blue light.",
    },
    {"question": "can penguins fly", "title": "Penguin", "answer": False, "passage": "Penguins are flightless birds."},
]

PIQA_VALID = [
    {"goal": "How do I keep bread fresh?", "sol1": "Store it in a sealed bag.", "sol2": "Store it in water."},
    {"goal": "crème brûlée", "sol1": "is frozen to caramelise the top ", "sol2": "is torched to caramelise the top "},
]
PIQA_VALID_LABELS = "0\n1\n"

WINOGRANDE_DEV = [
    {
        "qID": "W1-1",
        "sentence": "The trophy didn't fit in the suitcase because _ was too big.",
        "option1": "the trophy",
        "option2": "the suitcase",
        "answer": "1",
    },
    {
        "qID": "W1-2",
        "sentence": "Anna lent Beth her car because _'s own car was broken.",
        "option1": "Anna",
        "option2": "Beth",
        "answer": "2",
    },
]


def hellaswag_record(ind: int, activity: str, ctx_a: str, ctx_b: str, endings: list[str], label: int) -> dict:
    return {
        "ind": ind,
        "activity_label": activity,
        "ctx_a": ctx_a,
        "ctx_b": ctx_b,
        "ctx": f"{ctx_a} {ctx_b}".strip(),
        "split": "val",
        "split_type": "indomain",
        "label": label,
        "endings": endings,
        "source_id": f"src-{ind}",
    }


HELLASWAG_VAL = [
    hellaswag_record(
        7,
        "Washing dishes",
        "A woman stands at a sink full of plates.",
        "she",
        ["rinses a plate under the tap.", "throws the plates away.", " dries the   sink with a towel. ", "eats soap."],
        0,
    ),
    hellaswag_record(
        9,
        "Home and Garden",
        "[header] How to water a cactus [title] Check the soil.",
        "",
        ["[step] Water only when dry. [substeps] Use a can.", "Pour milk on it.", "[title] Sing to it.", "Paint it."],
        0,
    ),
    hellaswag_record(
        12,
        "Playing guitar",
        "A man tunes his guitar on stage.",
        "The Crowd cheers as he",
        ["starts to play a song.", "eats the guitar.", "flies away.", "turns into a cat."],
        0,
    ),
]

HELLASWAG_DERIVED = (
    "Washing dishes: A woman stands at a sink full of plates. she\n2\n"
    "rinses a plate.\nthrows the plates away.\ndries the [title] sink.\neats soap.\n"
    "Home and Garden: How to water a cactus. Check the soil.\n0\n"
    "Water only when dry.\nPour milk on it.\nSing to it.\nPaint it.\n"
)

# The same records in the hub schema lm-eval's configs read.
HUB_DOCS: dict[str, list[dict[str, Any]]] = {
    "arc_easy": [
        {
            "id": r["id"],
            "question": r["question"]["stem"],
            "choices": {
                "text": [c["text"] for c in r["question"]["choices"]],
                "label": [c["label"] for c in r["question"]["choices"]],
            },
            "answerKey": r["answerKey"],
        }
        for r in ARC_TEST
    ],
    "boolq": [
        {"question": r["question"], "passage": f"{r['title']} -- {r['passage']}", "idx": i, "label": int(r["answer"])}
        for i, r in enumerate(BOOLQ_DEV)
    ],
    "hellaswag": [{**r, "label": str(r["label"])} for r in HELLASWAG_VAL],
    "piqa": [{**r, "label": int(lab)} for r, lab in zip(PIQA_VALID, PIQA_VALID_LABELS.split(), strict=True)],
    "winogrande": [{k: v for k, v in r.items() if k != "qID"} for r in WINOGRANDE_DEV],
}
HUB_DOCS["arc_challenge"] = HUB_DOCS["arc_easy"]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory in /work/shared/data's layout holding the fixture records."""
    root = tmp_path / "data"
    for name, prefix in (("arc_easy", "ARC-Easy"), ("arc_challenge", "ARC-Challenge")):
        write_jsonl(root / name / f"{prefix}-Train.jsonl", ARC_TRAIN)
        write_jsonl(root / name / f"{prefix}-Dev.jsonl", ARC_DEV)
        write_jsonl(root / name / f"{prefix}-Test.jsonl", ARC_TEST)
    write_jsonl(root / "boolq" / "dev.jsonl", BOOLQ_DEV)
    write_jsonl(root / "piqa" / "valid.jsonl", PIQA_VALID)
    write_text(root / "piqa" / "valid-labels.lst", PIQA_VALID_LABELS)
    write_text(root / "piqa" / "train-labels.lst", "0\n")  # labels without their jsonl, as in the real copy
    write_jsonl(root / "winogrande" / "dev.jsonl", WINOGRANDE_DEV)
    write_jsonl(root / "winogrande" / "train_s.jsonl", WINOGRANDE_DEV[:1])
    write_jsonl(root / "winogrande" / "train_xs.jsonl", WINOGRANDE_DEV[1:])
    write_jsonl(root / "hellaswag" / "hellaswag_val.jsonl", HELLASWAG_VAL)
    return root


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def content(item: Item) -> tuple:
    """Everything but the id, to compare items from different sources."""
    return item.requests, item.choices, item.gold, item.router_text


# --------------------------------------------------------------------------- 1. original files


def test_arc_original_files(data_dir: Path) -> None:
    task = get_task("arc_easy")
    assert (task.metrics, task.eval_split, task.hf_path, task.hf_name) == (
        ("acc", "acc_norm"),
        "test",
        "allenai/ai2_arc",
        "ARC-Easy",
    )
    items = task.load("test", data_dir)
    assert [i.item_id for i in items] == ["Q-1", "Q-2", "Q-3"]
    q1 = "Question: Which gas do plants take in?\nAnswer:"
    assert items[0] == Item(
        task="arc_easy",
        item_id="Q-1",
        requests=((q1, " oxygen"), (q1, " carbon dioxide"), (q1, " helium"), (q1, " neon")),
        choices=("oxygen", "carbon dioxide", "helium", "neon"),
        gold=1,
        router_text=q1,
    )
    assert items[1].gold == 1 and items[1].choices == ("six", "eight", "ten")  # numeric labels "1".."3"
    assert (
        items[2].gold == 4 and items[2].router_text == 'Question: In the note "{{ water }} boils", what boils?\nAnswer:'
    )
    assert [i.item_id for i in task.load("train", data_dir)] == ["T-1", "T-2"]
    assert [i.item_id for i in task.load("validation", data_dir)] == ["D-1"]
    assert task.available_splits(data_dir) == ("train", "validation", "test")
    assert get_task("arc_challenge").load("test", data_dir)[0].task == "arc_challenge"


def test_boolq_original_files(data_dir: Path) -> None:
    items = get_task("boolq").load("validation", data_dir)
    ctx = (
        "Sky -- On a clear day the sky looks blue because air scatters blue light.\n"
        "Question: is the sky blue on a clear day?\nAnswer:"
    )
    assert items[0] == Item("boolq", "validation-0", ((ctx, " no"), (ctx, " yes")), ("no", "yes"), 1, ctx)
    assert items[1].gold == 0 and items[1].item_id == "validation-1"
    assert items[1].router_text == "Penguin -- Penguins are flightless birds.\nQuestion: can penguins fly?\nAnswer:"
    assert get_task("boolq").available_splits(data_dir) == ("validation",)


def test_piqa_original_files(data_dir: Path) -> None:
    items = get_task("piqa").load("validation", data_dir)
    ctx = "Question: How do I keep bread fresh?\nAnswer:"
    assert items[0] == Item(
        "piqa",
        "validation-0",
        ((ctx, " Store it in a sealed bag."), (ctx, " Store it in water.")),
        ("Store it in a sealed bag.", "Store it in water."),
        0,
        ctx,
    )
    # Trailing spaces of the original solutions are kept, as lm-eval keeps them.
    assert items[1].requests[1] == ("Question: crème brûlée\nAnswer:", " is torched to caramelise the top ")
    assert items[1].gold == 1
    # train-labels.lst alone (no train.jsonl) does not make a train split.
    assert get_task("piqa").available_splits(data_dir) == ("validation",)


def test_winogrande_original_files(data_dir: Path) -> None:
    task = get_task("winogrande")
    items = task.load("validation", data_dir)
    first = "The trophy didn't fit in the suitcase because "
    assert items[0] == Item(
        task="winogrande",
        item_id="W1-1",
        requests=((first + "the trophy", " was too big."), (first + "the suitcase", " was too big.")),
        choices=(first + "the trophy", first + "the suitcase"),
        gold=0,
        router_text=WINOGRANDE_DEV[0]["sentence"],
    )
    assert items[1].requests == (
        ("Anna lent Beth her car because Anna", " 's own car was broken."),
        ("Anna lent Beth her car because Beth", " 's own car was broken."),
    )
    assert items[1].gold == 1
    # train: the largest size present (train_s here, before train_xs).
    assert [i.item_id for i in task.load("train", data_dir)] == ["W1-1"]
    assert task.source_files("train", data_dir) == (data_dir / "winogrande" / "train_s.jsonl",)


def test_hellaswag_original_jsonl(data_dir: Path) -> None:
    items = get_task("hellaswag").load("validation", data_dir)
    assert [i.item_id for i in items] == ["7", "9", "12"]
    q0 = "Washing dishes: A woman stands at a sink full of plates. She"
    assert items[0].requests[0] == (q0, " rinses a plate under the tap.")
    assert items[0].choices[2] == "dries the  sink with a towel."  # one pass of double-space collapsing, as lm-eval
    assert items[0].router_text == q0
    assert items[1].router_text == "Home and Garden: How to water a cactus. Check the soil."
    assert items[1].choices == (" Water only when dry. Use a can.", "Pour milk on it.", " Sing to it.", "Paint it.")
    assert items[2].router_text == "Playing guitar: A man tunes his guitar on stage. The crowd cheers as he"
    assert [i.gold for i in items] == [0, 0, 0]


def test_hellaswag_derived_text_file(tmp_path: Path) -> None:
    write_text(tmp_path / "hellaswag" / "derived_llamacpp_format" / "hellaswag_val_full.txt", HELLASWAG_DERIVED)
    items = get_task("hellaswag").load("validation", tmp_path)
    ctx = "Washing dishes: A woman stands at a sink full of plates. she"  # not capitalised in this copy
    assert items[0] == Item(
        "hellaswag",
        "validation-0",
        tuple((ctx, " " + e) for e in ("rinses a plate.", "throws the plates away.", "dries the. sink.", "eats soap.")),
        ("rinses a plate.", "throws the plates away.", "dries the. sink.", "eats soap."),
        2,
        ctx,
    )
    assert items[1].item_id == "validation-1" and items[1].gold == 0
    assert get_task("hellaswag").available_splits(tmp_path) == ("validation",)


def test_original_files_match_hub_records(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both sources build the same prompts, so the lm-eval equality below holds for the original files too."""
    import datasets

    by_config = {(get_task(name).hf_path, get_task(name).hf_name): name for name in DEFAULT_TASKS}
    monkeypatch.setattr(
        datasets, "load_dataset", lambda path, name, split: datasets.Dataset.from_list(HUB_DOCS[by_config[path, name]])
    )
    for name in DEFAULT_TASKS:
        task = get_task(name)
        local, hub = task.load(task.eval_split, data_dir), task.load(task.eval_split)
        assert [content(i) for i in local] == [content(i) for i in hub], name


# --------------------------------------------------------------------------- 2. hub records


def test_hub_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []

    def fake_load_dataset(path: str, name: str | None, split: str) -> datasets.Dataset:
        calls.append((path, name, split))
        return datasets.Dataset.from_list(HUB_DOCS[{"baber/piqa": "piqa", "allenai/winogrande": "winogrande"}[path]])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    piqa = get_task("piqa").load("validation")
    assert piqa[1] == Item(
        "piqa",
        "validation-1",
        (
            ("Question: crème brûlée\nAnswer:", " is frozen to caramelise the top "),
            ("Question: crème brûlée\nAnswer:", " is torched to caramelise the top "),
        ),
        ("is frozen to caramelise the top ", "is torched to caramelise the top "),
        1,
        "Question: crème brûlée\nAnswer:",
    )
    wino = get_task("winogrande").load("train")
    assert [i.item_id for i in wino] == ["train-0", "train-1"]  # the hub copy has no qID
    assert wino[0].requests[1] == ("The trophy didn't fit in the suitcase because the suitcase", " was too big.")
    assert calls == [("baber/piqa", None, "validation"), ("allenai/winogrande", "winogrande_xl", "train")]
    assert get_task("arc_easy").available_splits() == ("train", "validation", "test")
    assert get_task("hellaswag").available_splits() == ("train", "validation")


# --------------------------------------------------------------------------- 3. equality with lm-eval itself

LM_EVAL_YAML = {
    "arc_easy": "arc/arc_easy.yaml",
    "arc_challenge": "arc/arc_challenge.yaml",
    "boolq": "super_glue/boolq/default.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
    "piqa": "piqa/piqa.yaml",
    "winogrande": "winogrande/default.yaml",
}


def lm_eval_gold(lm_task: Any, doc: dict, n_choices: int) -> int:
    """lm-eval's gold, read from its own scoring: the one choice whose top log-likelihood earns acc 1."""
    hits = []
    for k in range(n_choices):
        results = [(0.0 if j == k else -1000.0, False) for j in range(n_choices)]
        if lm_task.process_results(doc, results)["acc"] == 1.0:
            hits.append(k)
    assert len(hits) == 1, hits
    return hits[0]


@pytest.mark.parametrize("name", DEFAULT_TASKS)
def test_requests_equal_lm_eval(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """lm-eval's own task (its installed YAML, ``!function`` hooks and request builder) on a local JSON copy."""
    yaml = pytest.importorskip("yaml")
    datasets = pytest.importorskip("datasets")
    lm_tasks = pytest.importorskip("lm_eval.tasks")
    from lm_eval.tasks._yaml_loader import load_yaml

    config_path = Path(lm_tasks.__file__).parent / LM_EVAL_YAML[name]
    data = write_jsonl(tmp_path / f"{name}.jsonl", HUB_DOCS[name])
    wrapper = tmp_path / f"{name}_local.yaml"
    wrapper.write_text(
        yaml.safe_dump(
            {
                "include": str(config_path),
                "task": f"pudding_test_{name}",
                "dataset_path": "json",
                "dataset_name": None,
                "dataset_kwargs": {
                    "data_files": {split: str(data) for split in ("train", "validation", "test")},
                    "cache_dir": str(tmp_path / "hf_cache"),
                },
            }
        )
    )
    lm_task = lm_tasks.TaskManager(include_defaults=False).load(str(wrapper))["tasks"][f"pudding_test_{name}"]
    lm_task.build_all_requests()
    lm_requests: dict[int, list] = defaultdict(list)
    for instance in sorted(lm_task.instances, key=lambda inst: (inst.doc_id, inst.idx)):
        lm_requests[instance.doc_id].append(tuple(instance.arguments))
    lm_docs = list(lm_task.eval_docs)

    ours_task = get_task(name)
    original = load_yaml(config_path, resolve_func=False)
    assert (original["dataset_path"], original.get("dataset_name")) == (ours_task.hf_path, ours_task.hf_name)
    assert tuple(m["metric"] for m in lm_task.config.metric_list) == ours_task.metrics
    assert (lm_task.config.test_split or lm_task.config.validation_split) == ours_task.eval_split

    # Feed our hub path the very dataset lm-eval loaded (before its process_docs).
    monkeypatch.setattr(datasets, "load_dataset", lambda path, name, split: lm_task.dataset[split])
    ours = ours_task.load(ours_task.eval_split)

    assert len(ours) == len(lm_docs) == len(HUB_DOCS[name])
    for doc_id, (item, doc) in enumerate(zip(ours, lm_docs, strict=True)):
        assert list(item.requests) == lm_requests[doc_id], (name, doc_id)
        assert list(item.choices) == list(lm_task.doc_to_choice(doc)), (name, doc_id)
        assert item.gold == lm_eval_gold(lm_task, doc, len(item.choices)), (name, doc_id)


# --------------------------------------------------------------------------- 4. errors


def test_missing_files(data_dir: Path, tmp_path: Path) -> None:
    (data_dir / "piqa" / "valid-labels.lst").unlink()
    with pytest.raises(TaskDataError) as err:
        get_task("piqa").load("validation", data_dir)
    message = str(err.value)
    assert "piqa" in message and "'validation'" in message
    assert str(data_dir / "piqa" / "valid-labels.lst") in message
    assert "found in" in message and "valid.jsonl" in message
    with pytest.raises(TaskDataError, match="does not exist"):
        get_task("boolq").load("validation", tmp_path / "nowhere")
    with pytest.raises(TaskDataError, match=r"boolq: cannot load split 'train'.*train\.jsonl"):
        get_task("boolq").load("train", data_dir)


def test_malformed_json_line(data_dir: Path) -> None:
    path = data_dir / "boolq" / "dev.jsonl"
    path.write_text(path.read_text() + '{"question": "broken",\n', encoding="utf-8")
    with pytest.raises(TaskDataError, match=r"dev\.jsonl, line 3: invalid JSON"):
        get_task("boolq").load("validation", data_dir)


def test_missing_and_bad_fields(data_dir: Path) -> None:
    write_jsonl(data_dir / "winogrande" / "dev.jsonl", [WINOGRANDE_DEV[0], {**WINOGRANDE_DEV[1], "option2": None}])
    with pytest.raises(TaskDataError, match=r"dev\.jsonl, line 2: field 'option2' should be str"):
        get_task("winogrande").load("validation", data_dir)
    record = {k: v for k, v in BOOLQ_DEV[0].items() if k != "title"}
    write_jsonl(data_dir / "boolq" / "dev.jsonl", [record])
    with pytest.raises(TaskDataError, match=r"dev\.jsonl, line 1: missing field 'title'"):
        get_task("boolq").load("validation", data_dir)
    write_jsonl(data_dir / "boolq" / "dev.jsonl", [{**BOOLQ_DEV[0], "answer": "true"}])
    with pytest.raises(TaskDataError, match=r"line 1: field 'answer' should be bool"):
        get_task("boolq").load("validation", data_dir)
    write_jsonl(data_dir / "arc_easy" / "ARC-Easy-Test.jsonl", [{**ARC_TEST[0], "answerKey": "Z"}])
    with pytest.raises(TaskDataError, match=r"ARC-Easy-Test\.jsonl, line 1: field 'answerKey'"):
        get_task("arc_easy").load("test", data_dir)
    write_jsonl(data_dir / "winogrande" / "dev.jsonl", [{**WINOGRANDE_DEV[0], "sentence": "No blank here."}])
    with pytest.raises(TaskDataError, match=r"line 1: field 'sentence' has no blank"):
        get_task("winogrande").load("validation", data_dir)


def test_label_file_problems(data_dir: Path) -> None:
    labels = data_dir / "piqa" / "valid-labels.lst"
    labels.write_text("0\n", encoding="utf-8")
    with pytest.raises(TaskDataError, match=r"valid-labels\.lst: 1 labels for 2 records in .*valid\.jsonl"):
        get_task("piqa").load("validation", data_dir)
    labels.write_text("0\n1\n1\n", encoding="utf-8")
    with pytest.raises(TaskDataError, match=r"first unpaired: .*valid-labels\.lst, line 3"):
        get_task("piqa").load("validation", data_dir)
    labels.write_text("0\n2\n", encoding="utf-8")
    with pytest.raises(TaskDataError, match=r"valid-labels\.lst, line 2: field 'label' should be 0 or 1"):
        get_task("piqa").load("validation", data_dir)


def test_hellaswag_derived_file_problems(tmp_path: Path) -> None:
    path = tmp_path / "hellaswag" / "derived_llamacpp_format" / "hellaswag_val_full.txt"
    task = get_task("hellaswag")
    write_text(path, HELLASWAG_DERIVED + "Extra: a lonely context\n1\n")
    with pytest.raises(TaskDataError, match=r"hellaswag_val_full\.txt, line 13: last item has 2 of 6 lines"):
        task.load("validation", tmp_path)
    write_text(path, HELLASWAG_DERIVED.replace("throws the plates away.", ""))
    with pytest.raises(TaskDataError, match=r"line 4: field 'ending 2' is blank"):
        task.load("validation", tmp_path)
    write_text(path, HELLASWAG_DERIVED.replace("\n2\n", "\n4\n"))
    with pytest.raises(TaskDataError, match=r"line 2: field 'label' should be 0-3, got '4'"):
        task.load("validation", tmp_path)


def test_unknown_task_and_split(data_dir: Path) -> None:
    with pytest.raises(TaskDataError, match=r"unknown task 'mmlu'; known tasks: arc_easy, arc_challenge, boolq"):
        get_task("mmlu")
    with pytest.raises(TaskDataError, match=r"unknown task 'mmlu'"):
        parse_task_list("piqa, mmlu")
    with pytest.raises(TaskDataError, match="empty task name"):
        parse_task_list("piqa,,boolq")
    with pytest.raises(TaskDataError, match="empty task name"):
        parse_task_list([])
    assert parse_task_list(" piqa, boolq ,piqa") == ("piqa", "boolq")
    assert parse_task_list(["winogrande", " arc_easy"]) == ("winogrande", "arc_easy")
    assert tuple(TASKS) == DEFAULT_TASKS
    with pytest.raises(TaskDataError, match=r"piqa: unknown split 'test'; .*: train, validation"):
        get_task("piqa").load("test", data_dir)
    with pytest.raises(TaskDataError, match=r"hellaswag: unknown split 'dev'; labelled splits on the hub: train, val"):
        get_task("hellaswag").load("dev")


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, float("nan")])
def test_bad_router_fraction(fraction: float) -> None:
    with pytest.raises(OptionError, match="router_fraction"):
        DataOptions(router_fraction=fraction)
    opts = DataOptions()
    opts.router_fraction = fraction
    with pytest.raises(OptionError, match="router_fraction"):
        router_items("piqa", opts)


# --------------------------------------------------------------------------- 5. router / evaluation partition


def write_piqa(root: Path, n: int, reverse: bool = False) -> None:
    rows = [({"goal": f"goal {i}", "sol1": f"a{i}", "sol2": f"b{i}"}, str(i % 2)) for i in range(n)]
    write_jsonl(root / "piqa" / "valid.jsonl", [r for r, _ in (rows[::-1] if reverse else rows)])
    write_text(root / "piqa" / "valid-labels.lst", "".join(f"{lab}\n" for _, lab in (rows[::-1] if reverse else rows)))


def test_partition_carves_validation_when_no_train(tmp_path: Path) -> None:
    write_piqa(tmp_path, 400)
    opts = DataOptions(data_dir=str(tmp_path), router_fraction=0.3, split_seed=1)
    router, router_note = router_items("piqa", opts)
    evaluated, eval_note = eval_items("piqa", opts)
    router_ids, eval_ids = [i.item_id for i in router], [i.item_id for i in evaluated]
    assert not set(router_ids) & set(eval_ids)
    assert sorted(router_ids + eval_ids, key=lambda s: int(s.split("-")[1])) == [f"validation-{i}" for i in range(400)]
    assert 0.2 < len(router) / 400 < 0.4
    for ids in (router_ids, eval_ids):  # source order kept
        assert ids == sorted(ids, key=lambda s: int(s.split("-")[1]))
    assert f"{len(router)} of 400 validation items are reserved for router training and excluded" in eval_note
    assert "no train split" in router_note and f"{len(router)} of 400" in router_note

    clear_cache()
    assert [i.item_id for i in router_items("piqa", opts)[0]] == router_ids  # deterministic
    other_seed = DataOptions(data_dir=str(tmp_path), router_fraction=0.3, split_seed=2)
    assert [i.item_id for i in router_items("piqa", other_seed)[0]] != router_ids
    assert all(is_router_item("piqa", i, opts) for i in router_ids)


def test_partition_membership_ignores_file_order(tmp_path: Path) -> None:
    """WinoGrande ids are qIDs, so reversing its file must select exactly the same items."""
    records = [{**WINOGRANDE_DEV[0], "qID": f"Q{i}"} for i in range(60)]
    forward, backward = tmp_path / "forward", tmp_path / "backward"
    write_jsonl(forward / "winogrande" / "dev.jsonl", records)
    write_jsonl(backward / "winogrande" / "dev.jsonl", records[::-1])
    picked = [
        [i.item_id for i in router_items("winogrande", DataOptions(str(root)))[0]] for root in (forward, backward)
    ]
    assert picked[0] == picked[1][::-1] and 0 < len(picked[0]) < 60
    assert "no train split" in eval_items("winogrande", DataOptions(str(forward)))[1]


def test_partition_uses_train_without_exclusion(data_dir: Path) -> None:
    opts = DataOptions(data_dir=str(data_dir))
    router, note = router_items("arc_easy", opts)
    assert [i.item_id for i in router] == ["T-1", "T-2"]
    assert "all 2 train items" in note
    evaluated, note = eval_items("arc_easy", opts)
    assert [i.item_id for i in evaluated] == ["Q-1", "Q-2", "Q-3"]
    assert "evaluating on all 3 test items" in note
    # WinoGrande also has a train split here, so its whole validation split is evaluated.
    assert len(eval_items("winogrande", opts)[0]) == 2


def test_partition_validation_router_does_not_touch_test(data_dir: Path) -> None:
    """ARC without train: the router takes part of validation, and the test split is evaluated whole."""
    (data_dir / "arc_easy" / "ARC-Easy-Train.jsonl").unlink()
    opts = DataOptions(data_dir=str(data_dir), router_fraction=0.99)
    router, note = router_items("arc_easy", opts)
    assert [i.item_id for i in router] == ["D-1"] and "validation" in note
    assert len(eval_items("arc_easy", opts)[0]) == 3


# --------------------------------------------------------------------------- 6. the real data, when present

REAL_COUNTS = {
    ("arc_easy", "test"): 2376,
    ("arc_challenge", "test"): 1172,
    ("boolq", "validation"): 3270,
    ("hellaswag", "validation"): 10042,
    ("piqa", "validation"): 1838,
    ("winogrande", "validation"): 1267,
}


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real benchmark data not found at {SHARED_DATA}")
@pytest.mark.parametrize(("name", "split"), list(REAL_COUNTS))
def test_real_data(name: str, split: str) -> None:
    task = get_task(name)
    assert split == task.eval_split
    items = task.load(split, SHARED_DATA)
    assert len(items) == REAL_COUNTS[name, split]
    assert len({i.item_id for i in items}) == len(items)
    for item in items:
        assert len(item.requests) == len(item.choices) >= 2
        assert 0 <= item.gold < len(item.choices)
        assert item.task == name and item.router_text
