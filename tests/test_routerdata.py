"""Router data: build (scoring module, work units, shards, resume, DDP) and serving (RouterDataModule)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from lightning.pytorch import Trainer

from pudding.core.candidates import Candidate, CandidateSet, file_hash
from pudding.core.errors import OutputError
from pudding.core.llm import LLMOptions
from pudding.core.models.loading import load_base
from pudding.core.models.omission import kept_blocks
from pudding.core.prefix import plan_runs
from pudding.core.scoring import Scorer
from pudding.core.tasks import DataOptions, clear_cache, router_items
from pudding.router.data import RouterCollator, RouterDataModule, split_items, transform_targets
from pudding.routerdata import (
    META_FILE,
    RouterDataError,
    ScoringDataModule,
    ScoringModule,
    build_dataset,
    load_router_dataset,
    make_chunks,
    save_dataset,
    score_candidates,
)
from pudding.routerdata.build import print_headroom
from pudding.routerdata.dataset import BASE_COLUMNS, CHOICE_COLUMNS, CHOICE_METRICS, make_dataset
from pudding.routerdata.progress import pack_progress, unpack_progress
from pudding.routerdata.release import ReleaseError, check_release, write_release
from pudding.routerdata.scores import export_scores, rebuild_dataset

REPO = Path(__file__).resolve().parents[1]
SETS = [(1, 4), (2, 3), (0, 5), (3, 4), (4, 5)]
WORDS = ["the", "a", "cat", "dog", "sun", "rain", "tree", "river", "stone", "light", "quick", "slow", "red", "blue"]
TASKS = "arc_easy,boolq"


def _sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def write_data(root: Path, n: int = 30, seed: int = 0) -> Path:
    """Tiny benchmark files in the ../shared/data layout: ARC-Easy with a train split, BoolQ with validation only."""
    rng = random.Random(seed)
    arc = root / "arc_easy"
    arc.mkdir(parents=True)
    with open(arc / "ARC-Easy-Train.jsonl", "w") as fh:
        for i in range(n):
            choices = [{"text": _sentence(rng, 1, 5), "label": label} for label in "ABCD"]
            question = {"stem": _sentence(rng, 3, 25) + "?", "choices": choices}
            fh.write(json.dumps({"id": f"q{i}", "question": question, "answerKey": rng.choice("ABCD")}) + "\n")
    boolq = root / "boolq"
    boolq.mkdir(parents=True)
    with open(boolq / "dev.jsonl", "w") as fh:
        for _ in range(n):
            record = {"question": _sentence(rng, 4, 8), "title": _sentence(rng, 1, 3), "answer": rng.random() < 0.5}
            fh.write(json.dumps({**record, "passage": _sentence(rng, 5, 50)}) + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_setup(tmp_path_factory, tiny_llm_dir) -> dict:
    """A saved 6-block random Llama, a candidate file for it (K=5), and tiny task data."""
    root = tmp_path_factory.mktemp("routerdata")
    cands = root / "candidates.yaml"
    CandidateSet(
        base_model=str(tiny_llm_dir),
        num_blocks=6,
        num_omit=2,
        candidates=tuple(Candidate(omit=s, task="test", loss="hand") for s in SETS),
    ).save(cands)
    return {"root": root, "model": tiny_llm_dir, "candidates": cands, "data": write_data(root / "data")}


def trainer(**kwargs) -> Trainer:
    return Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False, **kwargs
    )


def build(setup: dict, output: Path, all_choices: bool = False, **kwargs) -> Path | None:
    llm = LLMOptions(dtype="float32")  # auto: bf16 on AMX
    module = ScoringModule(candidates=str(setup["candidates"]), llm=llm, all_choices=all_choices)
    data = ScoringDataModule(tasks=TASKS, data_dir=str(setup["data"]), items_per_batch=kwargs.pop("items_per_batch", 8))
    return build_dataset(trainer(), module, data, output, **kwargs)


def columns(path: Path) -> dict:
    dataset, _ = load_router_dataset(path)
    return dataset.to_dict()


def cli(setup: dict, output: Path, *extra: str, **popen) -> subprocess.Popen:
    """``python -m pudding.cli dataset`` on the tiny setup (the real entry point; DDP re-runs this command line)."""
    args = [sys.executable, "-m", "pudding.cli", "dataset", "--candidates", str(setup["candidates"])]
    args += ["--tasks", TASKS, "--data_dir", str(setup["data"]), "--items_per_batch", "8", "--output", str(output)]
    args += ["--dtype", "float32", "--trainer.accelerator", "cpu", *extra]
    # one CPU thread per process, like the ``reference_one_thread`` build, so results compare bit for bit
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), popen.pop("pythonpath", None)) if p)
    return subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
    )


# ------------------------------------------------------------------------------------------- work units


def test_chunks_cover_every_item_once_and_do_not_depend_on_anything_else(tiny_setup):
    items, _ = router_items("arc_easy", DataOptions(data_dir=str(tiny_setup["data"])))
    chunks = make_chunks({"arc_easy": items}, 8)
    assert chunks == make_chunks({"arc_easy": list(items)}, 8)
    seen = sorted(i for c in chunks for i in c.indices)
    assert seen == list(range(len(items)))
    assert [len(c.indices) for c in chunks] == [8, 8, 8, 6]
    assert len({c.chunk_id for c in chunks}) == len(chunks)


def test_units_follow_rank_zero_and_cover_every_rank(tiny_setup):
    """Ranks take rank 0's pending list; with fewer units than ranks, units repeat (Lightning needs one per rank)."""

    class FakeStrategy:
        def broadcast(self, obj, src=0):
            return ["arc_easy-00001"]  # what rank 0 saw

    class FakeTrainer:
        world_size = 3
        strategy = FakeStrategy()

    data = ScoringDataModule(tasks=TASKS, data_dir=str(tiny_setup["data"]), items_per_batch=8)
    data.load()
    data.pending = ["arc_easy-00000", "boolq-00000"]
    data.trainer = FakeTrainer()
    data.setup("predict")
    units = list(data.predict_dataloader())
    assert [u["chunk_id"] for u in units] == ["arc_easy-00001"] * 3
    assert units[0]["index"] == list(data.chunks[1].indices) and len(units[0]["context"]) == 8


# ------------------------------------------------------------------------------------------- scoring


def test_plan_runs_every_path_once_from_states_already_recorded():
    rng = random.Random(0)
    for _ in range(500):
        n = rng.randint(2, 9)
        m = rng.randint(0, n - 1)
        sets = [tuple(sorted(rng.sample(range(n), m))) for _ in range(rng.randint(1, 6))]
        sets.append(tuple(range(n - m, n)))  # a candidate whose kept blocks are a prefix of the dense ones
        paths = [tuple(range(n))] + [kept_blocks(s, n) for s in sets]
        states, ran, blocks_run = set(), [], 0
        for run in plan_runs(paths):
            assert 0 <= run.start < len(run.path)
            assert run.start == 0 or run.path[: run.start] in states
            assert all(run.start < pos < len(run.path) for pos in run.capture)
            states |= {run.path[:pos] for pos in run.capture}
            states -= set(run.release)
            ran.append(run.path)
            blocks_run += len(run.path) - run.start
        assert sorted(ran) == sorted(set(paths)) and not states
        assert blocks_run <= sum(len(p) for p in set(paths))
    no_reuse = plan_runs([(0, 1, 2, 3), (0, 2, 3)], reuse_prefix=False)
    assert [r.start for r in no_reuse] == [0, 0]


def test_score_candidates_equals_direct_scoring(tiny_llama, tokenizer):
    scorer = Scorer(tiny_llama, tokenizer, batch_tokens=256)  # small budget: several batches per unit
    rng = random.Random(3)
    requests = [(_sentence(rng, 2, 30), " " + _sentence(rng, 1, 6)) for _ in range(12)]
    dense, rows = score_candidates(scorer, requests, SETS, reuse_prefix=True)
    dense_plain, rows_plain = score_candidates(scorer, requests, SETS, reuse_prefix=False)
    assert rows == rows_plain and dense == dense_plain  # the prefix reuse is exact, bit for bit
    for k, omit in enumerate(SETS):
        direct = [s.mean_logprob for s in scorer.score(requests, omit)]
        np.testing.assert_allclose([row[k] for row in rows], direct, rtol=0, atol=1e-5)
    np.testing.assert_allclose(dense, [s.mean_logprob for s in scorer.score(requests)], rtol=0, atol=1e-5)


@pytest.fixture(scope="session")
def reference(tiny_setup, tmp_path_factory) -> Path:
    """One uninterrupted single-process build of the tiny setup (shards kept), with torch's default threads."""
    return build(tiny_setup, tmp_path_factory.mktemp("reference") / "ds", keep_shards=True)


@pytest.fixture(scope="session")
def reference_one_thread(tiny_setup, tmp_path_factory) -> dict:
    """The same build with one CPU thread: what each of two DDP processes gets on a two-core machine."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        return columns(build(tiny_setup, tmp_path_factory.mktemp("reference1") / "ds"))
    finally:
        torch.set_num_threads(threads)


def test_dataset_rows_equal_direct_scoring_and_metadata(tiny_setup, reference, capsys):
    dataset, meta = load_router_dataset(reference)
    assert dataset.column_names == ["task", "item_id", "router_text", "scores", "dense_score"]
    opts = DataOptions(data_dir=str(tiny_setup["data"]))
    arc, _ = router_items("arc_easy", opts)
    boolq, note = router_items("boolq", opts)
    assert len(dataset) == len(arc) + len(boolq)
    assert dataset["task"] == ["arc_easy"] * len(arc) + ["boolq"] * len(boolq)
    assert dataset["item_id"] == [i.item_id for i in arc + boolq]  # task order, then source order
    assert meta["candidates_sha256"] and meta["candidates_file"] == str(tiny_setup["candidates"].resolve())
    assert meta["base_model"] == str(tiny_setup["model"]) and meta["num_candidates"] == len(SETS)
    assert meta["omission_sets"] == [list(s) for s in SETS]
    assert meta["dtype"] == "float32" and meta["dtype_reason"] == "set by the dtype option"
    assert meta["router_splits"] == {"arc_easy": "train", "boolq": "validation"} and set(meta["items_sha256"]) == {
        "arc_easy",
        "boolq",
    }
    assert "validation" in meta["notes"]["boolq"] and meta["notes"]["boolq"] == note

    base = load_base(str(tiny_setup["model"]), dtype="float32", device="cpu")
    scorer = Scorer(base.model, base.tokenizer)
    for pos in (0, 7, len(arc) + 2):
        item = (arc + boolq)[pos]
        row = dataset[pos]
        assert row["router_text"] == item.router_text and row["item_id"] == item.item_id
        gold = [item.requests[item.gold]]
        direct = [scorer.score(gold, omit)[0].mean_logprob for omit in SETS]
        np.testing.assert_allclose(row["scores"], direct, rtol=0, atol=1e-5)
        assert abs(row["dense_score"] - scorer.score(gold)[0].mean_logprob) < 1e-5


def test_same_config_gives_identical_dataset_and_resumes_from_shards(tiny_setup, reference, tmp_path, capsys):
    first = columns(reference)
    assert build(tiny_setup, reference) == reference  # up to date: nothing rescored, nothing rewritten
    assert "up to date" in capsys.readouterr().out
    again = build(tiny_setup, tmp_path / "again")
    out = capsys.readouterr().out
    assert "validation items" in out and "0 chunks already scored" in out  # says where router data came from
    assert columns(again) == first

    # an interrupted run: the output never got written and only some shards exist, one temp file was left behind
    shards = next(reference.with_name("ds.work").iterdir()) / "shards"
    b_work = tmp_path / "b.work" / shards.parent.name / "shards"
    b_work.mkdir(parents=True)
    kept = sorted(shards.glob("*.json"))[::2]
    for path in kept:
        (b_work / path.name).write_text(path.read_text())
    (b_work / ".arc_easy-00001.json.abc.tmp").write_text('{"key": "half a fi')
    assert columns(build(tiny_setup, tmp_path / "b")) == first
    assert f"{len(kept)} chunks already scored" in capsys.readouterr().out
    assert not (tmp_path / "b.work").exists()  # shards are removed once the dataset is written


def test_output_from_other_settings_is_refused_and_saving_is_atomic(tiny_setup, reference, tmp_path, monkeypatch):
    module = ScoringModule(candidates=str(tiny_setup["candidates"]), llm=LLMOptions(dtype="float32"))
    data = ScoringDataModule(tasks=TASKS, data_dir=str(tiny_setup["data"]), items_per_batch=8, limit=5)
    with pytest.raises(OutputError, match="other settings"):
        build_dataset(trainer(), module, data, reference)

    import datasets

    def crash(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", crash)
    data = ScoringDataModule(tasks="arc_easy", data_dir=str(tiny_setup["data"]), items_per_batch=8, limit=3)
    with pytest.raises(OSError, match="disk full"):
        build_dataset(trainer(), module, data, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".new.")]  # no half-written temp folder left
    assert columns(reference)  # the earlier dataset is untouched


def test_killed_run_resumes_to_the_uninterrupted_result(tiny_setup, reference_one_thread, tmp_path):
    (tmp_path / "slow_callback.py").write_text(
        "import time\nfrom lightning.pytorch.callbacks import Callback\n\n\n"
        "class Slow(Callback):\n"
        "    def on_predict_batch_end(self, *args, **kwargs):\n"
        "        time.sleep(0.5)\n"
    )
    out = tmp_path / "killed"
    proc = cli(tiny_setup, out, "--trainer.callbacks+=slow_callback.Slow", pythonpath=str(tmp_path))
    # waits only as long as the start takes; generous because a loaded machine can take minutes to import and load
    deadline = time.time() + 600
    while time.time() < deadline and len(list((tmp_path / "killed.work").glob("*/shards/*.json"))) < 2:
        assert proc.poll() is None, "the build ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    done = len(list((tmp_path / "killed.work").glob("*/shards/*.json")))
    assert 2 <= done < 6, "the kill should land mid-run"
    assert not out.exists()  # no dataset, and certainly no half-written one

    proc = cli(tiny_setup, out)  # same settings, no slow-down: the trainer is not part of the build key
    log, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, log
    assert f"{done} chunks already scored" in log
    assert columns(out) == reference_one_thread


def test_ddp_two_processes_write_the_same_dataset_as_one(tiny_setup, reference, reference_one_thread, tmp_path):
    proc = cli(tiny_setup, tmp_path / "ddp", "--trainer.devices", "2", "--trainer.strategy", "ddp")
    log, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, log
    assert "MEMBER: 2/2" in log
    ddp = columns(tmp_path / "ddp")
    # batch composition does not depend on the world size: with equal CPU thread counts the numbers are identical
    assert ddp == reference_one_thread
    # against a process with another thread count, float32 kernels may round differently: equal to within 1e-5
    single = columns(reference)
    assert {k: v for k, v in single.items() if k not in ("scores", "dense_score")} == {
        k: v for k, v in ddp.items() if k not in ("scores", "dense_score")
    }
    np.testing.assert_allclose(single["scores"], ddp["scores"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(single["dense_score"], ddp["dense_score"], rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------- every answer choice


@pytest.fixture(scope="session")
def all_choice_reference(tiny_setup, tmp_path_factory) -> Path:
    """The tiny setup built with every answer choice scored (shards kept), same threads as ``reference``."""
    return build(tiny_setup, tmp_path_factory.mktemp("all_choices") / "ds", all_choices=True, keep_shards=True)


def hand_posterior(lls: list[float], gold: int) -> tuple[float, bool]:
    """The gold answer's log-probability among the choices, by torch's log-softmax, and whether argmax is gold."""
    values = torch.tensor(lls, dtype=torch.float64)
    return float(torch.log_softmax(values, dim=0)[gold]), int(torch.argmax(values)) == gold


def test_all_choice_columns_equal_a_hand_computation(tiny_setup, all_choice_reference):
    dataset, meta = load_router_dataset(all_choice_reference)
    assert dataset.column_names == [*BASE_COLUMNS, *CHOICE_COLUMNS]
    assert meta["all_choices"] is True and meta["acc_norm_tasks"] == ["arc_easy"]  # BoolQ reports acc only
    assert set(meta["choices_sha256"]) == {"arc_easy", "boolq"}
    opts = DataOptions(data_dir=str(tiny_setup["data"]))
    items = router_items("arc_easy", opts)[0] + router_items("boolq", opts)[0]
    base = load_base(str(tiny_setup["model"]), dtype="float32", device="cpu")
    scorer = Scorer(base.model, base.tokenizer)
    checked = {"norm_differs": 0}
    for pos in (0, 5, 11, len(items) - 4, len(items) - 1):
        item, row = items[pos], dataset[pos]
        for s, omit in enumerate([(), *SETS]):
            lls = [score.logprob for score in scorer.score(item.requests, omit)]  # each choice, summed
            normed = [ll / len(choice) for ll, choice in zip(lls, item.choices, strict=True)]
            post, right = hand_posterior(lls, item.gold)
            post_norm, right_norm = hand_posterior(normed if item.task == "arc_easy" else lls, item.gold)
            got = {name: row[f"dense_{name}"] if s == 0 else row[name][s - 1] for name in CHOICE_METRICS}
            assert abs(got["posterior"] - post) < 1e-5 and got["correct"] is right
            assert abs(got["posterior_norm"] - post_norm) < 1e-5 and got["correct_norm"] is right_norm
            checked["norm_differs"] += abs(post_norm - post) > 1e-3
    assert checked["norm_differs"] > 0  # on ARC the length normalisation moved the posterior


def test_all_choice_build_keeps_the_gold_only_dataset_bit_for_bit(tiny_setup, reference, all_choice_reference):
    """The gold-only columns of an all-choice build are today's dataset exactly (the gold pass is unchanged), and the
    two builds have different keys (a gold-only build keeps the key it always had)."""
    gold_only, all_choices = columns(reference), columns(all_choice_reference)
    assert {name: all_choices[name] for name in BASE_COLUMNS} == gold_only
    _, meta_gold = load_router_dataset(reference)
    _, meta_all = load_router_dataset(all_choice_reference)
    assert meta_gold["build_key"] != meta_all["build_key"] and "all_choices" not in meta_gold
    module = ScoringModule(candidates=str(tiny_setup["candidates"]), llm=LLMOptions(dtype="float32"))
    assert "all_choices" not in module.identity("cpu")


def test_all_choice_scores_file_and_progress_file_round_trip(tiny_setup, all_choice_reference, tmp_path, capsys):
    scores = export_scores(all_choice_reference, tmp_path / "scores.parquet")
    table = pq.read_table(scores)
    assert table.column_names == ["task", "item_id", "scores", "dense_score", *CHOICE_COLUMNS]  # no text, no label
    assert table.schema.field("correct").type == pa.list_(pa.bool_(), len(SETS))
    rebuilt = rebuild_dataset(scores, tiny_setup["candidates"], str(tiny_setup["data"]), tmp_path / "rebuilt")
    assert columns(rebuilt) == columns(all_choice_reference)
    assert load_router_dataset(rebuilt)[0].features == load_router_dataset(all_choice_reference)[0].features
    print_headroom(*load_router_dataset(rebuilt))
    out = capsys.readouterr().out
    assert "accuracy on the router data" in out and "| arc_easy | 30 |" in out.split("accuracy on")[1]

    run_dir = _reference_run(all_choice_reference)
    state = tmp_path / "state.parquet"
    shards = sorted((run_dir / "shards").glob("*.json"))
    assert pack_progress(run_dir, state) == len(shards)
    assert set(CHOICE_COLUMNS) <= set(pq.read_table(state).column_names)
    key = json.loads((run_dir / "build.json").read_text())["key"]
    assert unpack_progress(state, tmp_path / "elsewhere", key) == len(shards)
    assert all((tmp_path / "elsewhere" / p.name).read_bytes() == p.read_bytes() for p in shards)

    changed = _copy_data(tiny_setup["data"], tmp_path / "changed")  # a distractor edited: refused
    arc = changed / "arc_easy" / "ARC-Easy-Train.jsonl"
    records = [json.loads(line) for line in arc.read_text().splitlines()]
    wrong = next(c for c in records[0]["question"]["choices"] if c["label"] != records[0]["answerKey"])
    wrong["text"] += " indeed"
    arc.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(RouterDataError, match="changed task file"):
        rebuild_dataset(scores, tiny_setup["candidates"], str(changed), tmp_path / "out")


# ------------------------------------------------------------------------------------------- serving


def fake_dataset(path: Path, rows: list[tuple[str, str, list[float]]], sha: str = "a" * 64, k: int | None = None):
    """A router dataset written without a model: rows of (task, item_id, scores)."""
    width = len(rows[0][2])
    cols = {
        "task": [r[0] for r in rows],
        "item_id": [r[1] for r in rows],
        "router_text": [f"Question: what about {r[1]} and {'more ' * (i % 7)}?\nAnswer:" for i, r in enumerate(rows)],
        "scores": [r[2] for r in rows],
        "dense_score": [max(r[2]) for r in rows],
    }
    k = width if k is None else k
    meta = {
        "candidates_sha256": sha,
        "candidates_file": f"/somewhere/{sha[:4]}.yaml",
        "num_candidates": k,
        "omission_sets": [[i] for i in range(k)],
        "base_model": "test",
    }
    return save_dataset(make_dataset(cols, width), meta, path)


def rows(n: int, k: int = 4, task: str = "t", seed: int = 0) -> list[tuple[str, str, list[float]]]:
    rng = np.random.default_rng(seed)
    return [(task, f"item{i}", list(rng.normal(-2, 1, k))) for i in range(n)]


def test_split_is_by_item_and_never_leaks(tmp_path):
    a = fake_dataset(tmp_path / "a", rows(40))
    b = fake_dataset(tmp_path / "b", rows(40, seed=1)[10:] + rows(10, task="u"))  # overlaps a on 30 items
    dm = RouterDataModule(datasets=[str(a), str(b)], val_fraction=0.25, seed=3)
    with pytest.warns(UserWarning, match="30 rows repeat an item"):
        dm.setup("fit")
    train = {(e["task"], e["item_id"]) for e in dm.train_set}
    val = {(e["task"], e["item_id"]) for e in dm.val_set}
    assert not train & val
    assert len(train) + len(val) == len(dm.train_set) + len(dm.val_set) == 50
    assert len(val) == 13  # 0.25 × 50 = 12.5, rounded half up
    dm2 = RouterDataModule(datasets=f"{b},{a}", val_fraction=0.25, seed=3)  # other load order, same split
    with pytest.warns(UserWarning):
        dm2.setup("fit")
    assert {(e["task"], e["item_id"]) for e in dm2.val_set} == val
    assert split_items([("t", "x"), ("t", "x"), ("t", "y")], 0.5, 0) in ({("t", "x")}, {("t", "y")})


def test_collate_pads_to_the_longest_prompt_of_the_batch(tmp_path):
    path = fake_dataset(tmp_path / "a", rows(12))
    dm = RouterDataModule(datasets=str(path), batch_size=4, val_fraction=0.0, max_length=12)
    dm.setup("fit")
    assert dm.num_candidates == 4 and dm.val_dataloader() == []
    batch = next(iter(dm.train_dataloader()))
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape == (4, int(lengths.max())) and int(lengths.max()) <= 12
    pad = dm.tokenizer.pad_token_id
    for row, n in enumerate(lengths.tolist()):
        assert (batch["input_ids"][row, n:] == pad).all() and (batch["attention_mask"][row, :n] == 1).all()
        assert batch["input_ids"][row, 0] == dm.tokenizer.cls_token_id
    assert batch["targets"].dtype == torch.float32 and batch["targets"].shape == (4, 4)
    assert len(batch["task"]) == len(batch["item_id"]) == 4

    collate = RouterCollator(pad_token_id=7)
    examples = [
        {"input_ids": ids, "targets": np.zeros(2), "scores": np.zeros(2), "dense_score": 0.0, "task": "t", "item_id": i}
        for i, ids in (("x", [1, 2, 3]), ("y", [4]))
    ]
    out = collate(examples)
    assert out["input_ids"].tolist() == [[1, 2, 3], [4, 7, 7]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_mixing_candidate_files_and_k_mismatch_fail_clearly(tmp_path):
    a = fake_dataset(tmp_path / "a", rows(5))
    other = fake_dataset(tmp_path / "other", rows(5), sha="b" * 64)
    with pytest.raises(RouterDataError, match="different candidate files"):
        RouterDataModule(datasets=[str(a), str(other)]).setup("fit")
    with pytest.raises(RouterDataError, match="K=4 candidate scores per item, but the router expects num_candidates=3"):
        RouterDataModule(datasets=str(a), num_candidates=3).setup("fit")
    lying = fake_dataset(tmp_path / "lying", rows(5), k=3)  # metadata says K=3, rows hold 4 scores
    with pytest.raises(RouterDataError, match="K=3"):
        RouterDataModule(datasets=str(lying)).setup("fit")
    five = fake_dataset(tmp_path / "five", rows(5, k=5))
    with pytest.raises(RouterDataError, match="K=5"):
        make_dataset(
            {"task": ["t"], "item_id": ["x"], "router_text": ["?"], "scores": [[0.0] * 4], "dense_score": [0]}, 5
        )
    with pytest.raises(RouterDataError):
        RouterDataModule(datasets=[str(a), str(five)]).setup("fit")
    with pytest.raises(RouterDataError, match="does not exist"):
        RouterDataModule(datasets=str(tmp_path / "missing")).setup("fit")


def test_non_finite_rows_are_dropped_with_a_count(tmp_path):
    data = rows(10)
    data[2][2][1] = float("nan")
    data[5][2][0] = float("-inf")
    path = fake_dataset(tmp_path / "a", data)
    dm = RouterDataModule(datasets=str(path), val_fraction=0.2)
    with pytest.warns(UserWarning, match="dropped 2 of 10 rows"):
        dm.setup("fit")
    assert dm.dropped_nonfinite == 2 and len(dm.train_set) + len(dm.val_set) == 8


def test_target_transforms():
    scores = np.array([[-1.0, -3.0, -2.0], [-2.0, -2.0, -2.0]])
    np.testing.assert_array_equal(transform_targets(scores, "raw"), scores)
    np.testing.assert_allclose(transform_targets(scores, "minmax"), [[1.0, 0.0, 0.5], [0.0, 0.0, 0.0]])
    z = transform_targets(scores, "zscore")
    np.testing.assert_allclose(z[0].mean(), 0.0, atol=1e-12)
    np.testing.assert_allclose(z[0].std(), 1.0)
    np.testing.assert_array_equal(z[1], 0.0)
    with pytest.raises(ValueError, match="target_transform"):
        transform_targets(scores, "softmax")


def _examples(dm: RouterDataModule) -> dict[tuple[str, str], dict]:
    return {(e["task"], e["item_id"]): e for e in [*dm.train_set, *dm.val_set]}


def test_target_likelihood_serves_today_s_numbers_from_either_build(reference, all_choice_reference):
    """The default target on an all-choice dataset serves exactly what it serves on the gold-only one (today's
    dataset), which is the raw gold scores in float32; only ``correct`` rides along."""
    plain = RouterDataModule(datasets=str(reference), val_fraction=0.2)
    plain.setup("fit")
    both = RouterDataModule(datasets=str(all_choice_reference), val_fraction=0.2)
    both.setup("fit")
    assert not plain.has_correct and both.has_correct and plain.meta.keys() - both.meta.keys() == set()
    dataset, _ = load_router_dataset(reference)
    raw = {(t, i): s for t, i, s in zip(dataset["task"], dataset["item_id"], dataset["scores"], strict=True)}
    old, new = _examples(plain), _examples(both)
    assert old.keys() == new.keys() == raw.keys()
    for key, example in old.items():
        assert "correct" not in example and "correct" in new[key]
        for name in ("targets", "scores"):
            assert np.array_equal(example[name], new[key][name])
            assert np.array_equal(example[name], np.asarray(raw[key], dtype=np.float32))
    batch = next(iter(both.val_dataloader()))
    assert batch["correct"].shape == batch["scores"].shape and set(batch["correct"].unique().tolist()) <= {0.0, 1.0}
    assert "correct" not in next(iter(plain.val_dataloader()))


def test_targets_posterior_and_correct_follow_the_options(all_choice_reference):
    dataset, _ = load_router_dataset(all_choice_reference)
    table = dataset.to_dict()
    rows = {(t, i): n for n, (t, i) in enumerate(zip(table["task"], table["item_id"], strict=True))}

    def served(**options) -> dict[tuple[str, str], dict]:
        dm = RouterDataModule(datasets=str(all_choice_reference), val_fraction=0.2, **options)
        dm.setup("fit")
        return _examples(dm)

    for target, metric, column in (
        ("posterior", "acc", "posterior"),
        ("posterior", "acc_norm", "posterior_norm"),
        ("correct", "acc", "correct"),
        ("correct", "acc_norm", "correct_norm"),
    ):
        for key, example in served(target=target, metric=metric).items():
            want = np.asarray(table[column][rows[key]], dtype=np.float32)
            assert np.array_equal(example["scores"], want) and np.array_equal(example["targets"], want)
            correct = "correct_norm" if metric == "acc_norm" else "correct"
            assert np.array_equal(example["correct"], np.asarray(table[correct][rows[key]], dtype=np.float32))
    norm_differs = [
        key for key, e in served(target="posterior", metric="acc_norm").items() if key[0] == "arc_easy"
    ]  # ARC reports acc_norm: its two posteriors differ; BoolQ's are equal
    assert norm_differs and all(
        table["posterior"][rows[k]] != table["posterior_norm"][rows[k]] for k in norm_differs[:3]
    )
    assert all(table["posterior"][n] == table["posterior_norm"][n] for k, n in rows.items() if k[0] == "boolq")

    centred = served(target="posterior", center=True, dense_choice=True)
    for key, example in centred.items():
        full = np.asarray([*table["posterior"][rows[key]], table["dense_posterior"][rows[key]]], dtype=np.float64)
        assert example["scores"].shape == (len(SETS) + 1,) and abs(float(example["targets"].mean())) < 1e-6
        np.testing.assert_allclose(example["targets"], full - full.mean(), rtol=0, atol=1e-6)
        np.testing.assert_array_equal(example["scores"], full.astype(np.float32))  # metrics read the raw target


def test_posterior_or_correct_on_a_gold_only_dataset_is_refused_in_one_line(tmp_path):
    path = fake_dataset(tmp_path / "old", rows(6))
    RouterDataModule(datasets=str(path), target="likelihood").setup("fit")  # today's data still trains
    for target in ("posterior", "correct"):
        with pytest.raises(RouterDataError) as info:
            RouterDataModule(datasets=str(path), target=target).setup("fit")
        message = str(info.value)
        assert "\n" not in message and f"option data.target {target}" in message and str(path) in message
    for bad, option in ((dict(target="accuracy"), "data.target"), (dict(metric="f1"), "data.metric")):
        with pytest.raises(ValueError, match=option):
            RouterDataModule(datasets=str(path), **bad)


def test_real_dataset_serves_batches_when_built(tmp_path):
    """``checkpoints/router_dataset`` (the default output), when it has been built here, serves batches."""
    path = REPO / "checkpoints" / "router_dataset"
    if not (path / META_FILE).is_file():
        pytest.skip("the default router dataset has not been built in this checkout")
    dm = RouterDataModule(datasets=str(path), batch_size=16)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["targets"].shape == (16, dm.num_candidates)
    assert torch.isfinite(batch["targets"]).all()


# ------------------------------------------------------------------------------------ scores file, rebuild, release
def _copy_data(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_scores_file_rebuilds_the_identical_dataset(tiny_setup, reference, tmp_path):
    scores = export_scores(reference, tmp_path / "scores.parquet")
    table = pq.read_table(scores)
    assert table.column_names == ["task", "item_id", "scores", "dense_score"]  # no text leaves with the scores
    rebuilt = rebuild_dataset(scores, tiny_setup["candidates"], str(tiny_setup["data"]), tmp_path / "rebuilt")
    original, meta = load_router_dataset(reference)
    again, meta_again = load_router_dataset(rebuilt)
    assert again.features == original.features
    assert again.to_dict() == original.to_dict()  # float32 scores survive the round trip bit for bit
    assert meta_again == meta  # same machine, same paths: nothing differs, build key and candidate hash included
    # elsewhere only the two location fields follow the rebuild's arguments
    moved = _copy_data(tiny_setup["data"], tmp_path / "moved")
    cands = tmp_path / "c.yaml"
    cands.write_bytes(tiny_setup["candidates"].read_bytes())
    _, meta_moved = load_router_dataset(rebuild_dataset(scores, cands, str(moved), tmp_path / "rebuilt2"))
    assert {k for k in meta if meta[k] != meta_moved[k]} == {"data_dir", "candidates_file"}


def test_rebuild_refuses_what_does_not_match_with_one_line(tiny_setup, reference, tmp_path):
    scores = export_scores(reference, tmp_path / "scores.parquet")
    data = tiny_setup["data"]

    def fails(candidates=tiny_setup["candidates"], data_dir=data) -> str:
        with pytest.raises(RouterDataError) as info:
            rebuild_dataset(scores, candidates, str(data_dir), tmp_path / "out")
        assert "\n" not in str(info.value) and not (tmp_path / "out").exists()
        return str(info.value)

    other = tmp_path / "other.yaml"
    other.write_text(tiny_setup["candidates"].read_text().replace("loss: hand", "loss: other"))
    assert "candidate-hash mismatch" in fails(candidates=other) and str(other) in fails(candidates=other)

    gone = _copy_data(data, tmp_path / "gone")
    arc = gone / "arc_easy" / "ARC-Easy-Train.jsonl"
    lines = arc.read_text().splitlines(keepends=True)
    arc.write_text("".join(lines[:3] + lines[4:]))
    message = fails(data_dir=gone)
    assert "item_id 'q3'" in message and "arc_easy" in message and str(arc) in message

    changed = _copy_data(data, tmp_path / "changed")
    boolq = changed / "boolq" / "dev.jsonl"
    records = [json.loads(line) for line in boolq.read_text().splitlines()]
    records[0]["question"] += " really"
    boolq.write_text("".join(json.dumps(r) + "\n" for r in records))
    message = fails(data_dir=changed)
    assert "boolq" in message and "changed task file" in message and str(boolq) in message

    missing = _copy_data(data, tmp_path / "missing")
    (missing / "boolq" / "dev.jsonl").unlink()
    message = fails(data_dir=missing)
    assert "boolq" in message and "dev.jsonl" in message

    with pytest.raises(RouterDataError, match="not a pudding scores file"):
        bad = tmp_path / "plain.parquet"
        pq.write_table(pq.read_table(scores).replace_schema_metadata({}), bad)
        rebuild_dataset(bad, tiny_setup["candidates"], str(data), tmp_path / "out")


def test_dataset_command_rebuilds_from_scores_and_prints_headroom(tiny_setup, reference, tmp_path, capsys):
    from pudding.cli.dataset import main

    folder = tmp_path / "rel"
    folder.mkdir()
    export_scores(reference, folder / "scores.parquet")
    (folder / "candidates.yaml").write_bytes(tiny_setup["candidates"].read_bytes())
    main(
        [
            "--scores",
            str(folder / "scores.parquet"),
            "--data_dir",
            str(tiny_setup["data"]),
            "--output",
            str(tmp_path / "ds"),
        ]
    )  # candidates: the candidates.yaml beside the scores file
    out = capsys.readouterr().out
    assert "oracle" in out and "| all |" in out
    assert columns(tmp_path / "ds") == columns(reference)


def test_release_folder_is_checked_against_its_manifest(tiny_setup, reference, tmp_path):
    steps = [{"command": "pudding dataset ...", "seconds": 12.5, "machine": "test"}]
    manifest = write_release(reference, tmp_path / "rel", produced_by=steps)
    assert check_release(tmp_path / "rel") == manifest
    assert manifest["produced_by"] == steps and manifest["scores"]["rows"] == len(columns(reference)["task"])
    assert manifest["candidates"]["sha256"] == file_hash(tiny_setup["candidates"])
    assert manifest["headroom"][-1]["task"] == "all"
    with pytest.raises(OutputError):
        write_release(reference, tmp_path / "rel")
    with pytest.raises(ReleaseError, match=r"produced_by\[0\]\.seconds: missing"):
        write_release(reference, tmp_path / "rel2", produced_by=[{"command": "pudding dataset", "machine": "x"}])
    scores = tmp_path / "rel" / "router_scores.parquet"
    scores.write_bytes(scores.read_bytes() + b"x")
    with pytest.raises(ReleaseError, match="sha256 differs"):
        check_release(tmp_path / "rel")


# ------------------------------------------------------------------------------------------- progress file
PROGRESS_COLUMNS = ["chunk_id", "task", "index", "item_id", "scores", "dense_score"]


def _reference_run(reference: Path) -> Path:
    """The reference build's run dir (kept): ``build.json`` and every chunk's shard."""
    return next(reference.with_name("ds.work").iterdir())


def _lost_build(reference: Path, work: Path) -> tuple[Path, list[Path]]:
    """A build interrupted after some chunks: the reference's build record and every other shard, in ``work``."""
    src = _reference_run(reference)
    run_dir = work / src.name
    (run_dir / "shards").mkdir(parents=True)
    shutil.copy(src / "build.json", run_dir / "build.json")
    kept = sorted((src / "shards").glob("*.json"))[::2]
    for path in kept:
        shutil.copy(path, run_dir / "shards" / path.name)
    return run_dir, kept


def test_progress_file_carries_a_lost_build_to_the_uninterrupted_result(tiny_setup, reference, tmp_path, capsys):
    run_dir, kept = _lost_build(reference, tmp_path / "lost.work")
    all_chunks = sorted(p.stem for p in (_reference_run(reference) / "shards").glob("*.json"))
    assert 0 < len(kept) < len(all_chunks)
    state = tmp_path / "carried" / "state.parquet"
    assert pack_progress(run_dir, state) == len(kept)
    assert [p.name for p in state.parent.iterdir()] == ["state.parquet"]  # the name given; no temp file left

    table = pq.read_table(state)
    assert table.column_names == PROGRESS_COLUMNS  # ids and numbers only: no router text, no gold request
    assert table.schema.field("scores").type == pa.list_(pa.float64(), len(SETS))
    assert table.schema.field("dense_score").type == pa.float64()
    assert sorted(set(table.column("chunk_id").to_pylist())) == [p.stem for p in kept]
    record = json.loads((run_dir / "build.json").read_text())
    info = json.loads(table.schema.metadata[b"pudding"])
    assert (info["build_key"], info["identity"]) == (record["key"], record["identity"])

    # the shards it gives back are byte for byte the ones the build wrote; existing ones are not rewritten
    elsewhere = tmp_path / "elsewhere"
    assert unpack_progress(state, elsewhere, record["key"]) == len(kept)
    assert all((elsewhere / p.name).read_bytes() == p.read_bytes() for p in kept)
    assert unpack_progress(state, elsewhere, record["key"]) == 0

    shutil.rmtree(tmp_path / "lost.work")  # the machine is gone; the file travelled
    out = build(tiny_setup, tmp_path / "resumed", progress=state)
    log = capsys.readouterr().out
    assert f"gave {len(kept)} chunks" in log and f"{len(kept)} chunks already scored" in log
    assert columns(out) == columns(reference)  # bit for bit
    assert not (tmp_path / "resumed.work").exists()
    assert sorted(set(pq.read_table(state).column("chunk_id").to_pylist())) == all_chunks  # left in place, complete
    assert f"left in place with all {len(all_chunks)} chunks" in log


def test_progress_file_of_other_settings_or_damaged_is_refused_in_one_line(tiny_setup, reference, tmp_path):
    state = tmp_path / "state.parquet"
    pack_progress(_reference_run(reference), state)

    def refused(path: Path, dtype: str = "float32", batch_tokens: int = 1024) -> str:
        llm = LLMOptions(dtype=dtype, batch_tokens=batch_tokens)
        module = ScoringModule(candidates=str(tiny_setup["candidates"]), llm=llm)
        data = ScoringDataModule(tasks=TASKS, data_dir=str(tiny_setup["data"]), items_per_batch=8)
        with pytest.raises(RouterDataError) as info:
            build_dataset(trainer(), module, data, tmp_path / "out", progress=path)
        message = str(info.value)
        assert "\n" not in message and str(path) in message
        assert not list((tmp_path / "out.work").glob("*/shards/*.json"))  # nothing written from a refused file
        return message

    message = refused(state, dtype="bfloat16", batch_tokens=512)
    assert "belongs to another build" in message
    assert "dtype float32 there, bfloat16 here" in message and "batch_tokens 1024 there, 512 here" in message

    text = tmp_path / "notes.parquet"
    text.write_text("chunk 3 done\n")
    assert "not a whole Parquet file" in refused(text)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    assert "not a whole Parquet file" in refused(cut)
    scores = export_scores(reference, tmp_path / "scores.parquet")
    assert "not a pudding progress file" in refused(scores)
    table = pq.read_table(state)
    ids = table.column("item_id").to_pylist()
    ids[0] = "someone-else"
    damaged = tmp_path / "damaged.parquet"
    pq.write_table(table.set_column(3, "item_id", pa.array(ids)), damaged)
    assert "does not hold the items" in refused(damaged)


def test_progress_file_is_rewritten_while_scoring(tiny_setup, reference, tmp_path, monkeypatch):
    import pudding.routerdata.progress as progress

    saves = []

    def counted(run_dir, path):
        saves.append(real(run_dir, path))
        return saves[-1]

    real = progress.pack_progress
    monkeypatch.setattr(progress, "pack_progress", counted)
    n = len(list((_reference_run(reference) / "shards").glob("*.json")))
    state = tmp_path / "state.parquet"
    build(tiny_setup, tmp_path / "ds", progress=state, progress_save_every=0)
    assert saves == [*range(1, n + 1), n]  # after every chunk, then once more after scoring
    assert len(set(pq.read_table(state).column("chunk_id").to_pylist())) == n
    saves.clear()
    build(tiny_setup, tmp_path / "ds2", progress=tmp_path / "state2.parquet", progress_save_every=3600)
    assert saves == [n]  # no save was due while scoring: only the final one


def test_pack_progress_option_packs_a_build_without_loading_a_model(
    tiny_setup, reference, tmp_path, monkeypatch, capsys
):
    import pudding.core.models.loading as loading
    from pudding.cli.dataset import main

    def no_model(*args, **kwargs):
        raise AssertionError("no model may be loaded")

    monkeypatch.setattr(loading, "load_base", no_model)
    args = ["--candidates", str(tiny_setup["candidates"]), "--tasks", TASKS, "--data_dir", str(tiny_setup["data"])]
    args += ["--items_per_batch", "8", "--dtype", "float32", "--trainer.accelerator", "cpu"]
    state = tmp_path / "state.parquet"
    main([*args, "--output", str(reference), "--pack_progress", str(state)])  # the reference's shards are kept
    n = len(list((_reference_run(reference) / "shards").glob("*.json")))
    assert len(set(pq.read_table(state).column("chunk_id").to_pylist())) == n
    main([*args, "--output", str(tmp_path / "ds"), "--progress", str(state)])  # every chunk given: nothing scored
    assert columns(tmp_path / "ds") == columns(reference)

    for extra, wanted in (
        (["--output", str(tmp_path / "none"), "--pack_progress", str(tmp_path / "x.parquet")], "no build of these"),
        (["--progress", str(state), "--progress_save_every", "-1"], "option progress_save_every"),
    ):
        with pytest.raises(SystemExit) as exc:
            main([*args, *extra])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and wanted in err and err.count("\n") == 1, err


@pytest.fixture(autouse=True)
def _fresh_task_cache():
    """Task files are memoised by path; each test writes its own, but tmp paths can repeat across sessions."""
    clear_cache()
    yield
    clear_cache()
