"""The outcomes progress file: a killed evaluation's finished chunks travel in one Parquet file and resume exactly."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import interrupted_after, module_with_data, tiny_dataset, tiny_encoder, write_piqa

from pudding.core import outcomes as outcomes_module
from pudding.core.item_records import read_item_records, read_routed_choices
from pudding.core.outcomes import compute_outcomes
from pudding.core.outcomes_progress import (
    COLUMNS,
    PACK_FORMAT,
    OutcomesPackError,
    outcomes_saver,
    pack_outcomes,
    read_outcomes_pack,
    unpack_outcomes,
)
from pudding.core.scoring import Scorer
from pudding.core.tasks import Item

WORDS = ["the", "a", "cat", "dog", "sun", "rain", "tree", "river", "stone", "light", "quick", "slow", "red", "blue"]
SETS = [(), (1, 4), (2, 3), (1, 2), (3, 4)]
TEXT_MARK = "zebra"  # in every item's text and nowhere else


def make_items(task: str, n: int, seed: int) -> list[Item]:
    rng = random.Random(seed)
    items = []
    for i in range(n):
        context = f"{TEXT_MARK} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) + ":"
        choices = tuple(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3))) for _ in range(3))
        items.append(Item(task, f"{task}-{i}", tuple((context, " " + c) for c in choices), choices, i % 3, context))
    return items


TASKS = {"toy": make_items("toy", 11, 0), "other": make_items("other", 6, 1)}


@pytest.fixture(scope="module")
def scorer(tiny_llama, tokenizer) -> Scorer:
    return Scorer(tiny_llama, tokenizer, batch_tokens=256)


def run(scorer, cache_dir, sets=SETS, tasks=TASKS):
    return {t: compute_outcomes(scorer, items, sets, "m", cache_dir, chunk_items=4) for t, items in tasks.items()}


def same(a, b) -> None:
    assert a.keys() == b.keys()
    for task in a:
        assert a[task].item_ids == b[task].item_ids and np.array_equal(a[task].gold, b[task].gold)
        assert a[task].pred.keys() == b[task].pred.keys()
        for key in a[task].pred:
            assert np.array_equal(a[task].pred[key], b[task].pred[key])
            assert np.array_equal(a[task].pred_norm[key], b[task].pred_norm[key])


def counting(monkeypatch) -> list:
    """Count the LLM passes (one per chunk that needs scoring; its sets in the entry)."""
    real, ran = outcomes_module.run_paths, []
    monkeypatch.setattr(outcomes_module, "run_paths", lambda s, p, paths, r: ran.append(paths) or real(s, p, paths, r))
    return ran


def test_a_killed_run_packed_unpacked_on_a_fresh_dir_ends_equal_to_an_uninterrupted_one(scorer, tmp_path, monkeypatch):
    whole = run(scorer, None)
    cache = tmp_path / "a"
    # "other" done for the first three sets only; "toy" killed after two of its three chunks
    run(scorer, cache, SETS[:3], {"other": TASKS["other"]})
    monkeypatch.setattr(outcomes_module, "run_paths", interrupted_after(outcomes_module.run_paths, calls=2))
    with pytest.raises(KeyboardInterrupt):
        run(scorer, cache, SETS, {"toy": TASKS["toy"]})
    monkeypatch.undo()
    counts = pack_outcomes(cache, tmp_path / "progress.parquet")
    assert (counts.shards, counts.rows) == (2 + 2, 2 * 4 * len(SETS) + 6 * 3)
    shutil.rmtree(cache)

    fresh = tmp_path / "b"
    got = unpack_outcomes(tmp_path / "progress.parquet", fresh)
    assert (got.written, got.merged, got.unchanged, got.sleb) == (4, 0, 0, 0)
    ran = counting(monkeypatch)
    resumed = run(scorer, fresh)
    # toy: only its third chunk; other: the two sets it lacked, on each of its two chunks
    assert sorted(len(paths) for paths in ran) == [2, 2, len(SETS)]
    same(resumed, whole)
    # the file written again from the finished cache resumes with no scoring at all
    pack_outcomes(fresh, tmp_path / "progress.parquet")
    ran.clear()
    again = tmp_path / "c"
    unpack_outcomes(tmp_path / "progress.parquet", again)
    same(run(scorer, again), whole)
    assert ran == []


def test_the_file_holds_ids_and_choices_only(scorer, tmp_path):
    run(scorer, tmp_path / "cache", SETS[:2])
    pack_outcomes(tmp_path / "cache", tmp_path / "p.parquet")
    table = pq.read_table(tmp_path / "p.parquet")
    assert table.column_names == list(COLUMNS) == ["task", "key", "chunk", "item_id", "set_key", "pred", "pred_norm"]
    types = [table.schema.field(c).type for c in COLUMNS]
    assert types == [pa.string(), pa.string(), pa.int32(), pa.string(), pa.string(), pa.int16(), pa.int16()]
    meta = json.loads(table.schema.metadata[b"pudding"])
    assert meta == {"format": PACK_FORMAT, "shards": 5, "sleb": {}}
    ids = {i.item_id for items in TASKS.values() for i in items}
    assert set(table.column("item_id").to_pylist()) == ids and set(table.column("task").to_pylist()) == set(TASKS)
    assert set(table.column("set_key").to_pylist()) == {"", "1,4"}
    strings = {v for c in ("task", "key", "item_id", "set_key") for v in table.column(c).to_pylist()}
    assert not any(TEXT_MARK in v for v in strings) and TEXT_MARK not in json.dumps(meta)
    assert table.num_rows == 2 * sum(len(items) for items in TASKS.values())
    # pred and pred_norm are the outcomes' own
    out = run(scorer, tmp_path / "cache", SETS[:2])
    rows = table.filter(pc.equal(table.column("set_key"), "1,4")).to_pylist()
    by_id = {r["item_id"]: (r["pred"], r["pred_norm"]) for r in rows}
    for o in out.values():
        want = zip(o.pred["1,4"].tolist(), o.pred_norm["1,4"].tolist(), strict=True)
        assert [by_id[i] for i in o.item_ids] == list(want)


def test_unpack_adds_the_sets_a_shard_lacks_and_keeps_its_own(scorer, tmp_path, monkeypatch):
    tasks = {"toy": TASKS["toy"][:4]}  # one chunk
    run(scorer, tmp_path / "here", SETS[:3], tasks)
    run(scorer, tmp_path / "there", [SETS[0], *SETS[3:]], tasks)
    (shard_path,) = (tmp_path / "here").rglob("chunk-*.json")
    shard = json.loads(shard_path.read_text())
    shard["sets"][""] = [[9, 9]] * 4  # marks this shard's own dense outcomes
    shard_path.write_text(json.dumps(shard))
    pack_outcomes(tmp_path / "there", tmp_path / "p.parquet")
    counts = unpack_outcomes(tmp_path / "p.parquet", tmp_path / "here")
    assert (counts.written, counts.merged, counts.unchanged) == (0, 1, 0)
    merged = json.loads(shard_path.read_text())
    assert merged["key"] == shard["key"] and merged["item_ids"] == shard["item_ids"]
    assert list(merged["sets"]) == ["", "1,4", "2,3", "1,2", "3,4"] and merged["sets"][""] == [[9, 9]] * 4
    there = json.loads(next((tmp_path / "there").rglob("chunk-*.json")).read_text())
    assert merged["sets"]["1,2"] == there["sets"]["1,2"] and merged["sets"]["3,4"] == there["sets"]["3,4"]
    counts = unpack_outcomes(tmp_path / "p.parquet", tmp_path / "here")
    assert (counts.written, counts.merged, counts.unchanged) == (0, 0, 1)
    assert not list((tmp_path / "here").rglob("*.tmp"))
    ran = counting(monkeypatch)
    run(scorer, tmp_path / "here", SETS, tasks)
    assert ran == []


def test_sleb_records_travel_and_others_stay_behind(scorer, tmp_path):
    from pudding.core.outcomes import model_key
    from pudding.search.sleb import sleb_search

    cache = tmp_path / "cache"
    texts = ["the quick red dog ran past the river", "a slow blue stone sat under the tree in the rain"]
    key = model_key("tiny", "float32", "cpu")
    result = sleb_search(scorer, texts, 2, key, cache_dir=cache / "sleb", log=lambda _: None)
    (record_path,) = (cache / "sleb").glob("sleb-*.json")
    record = json.loads(record_path.read_text())
    (cache / "sleb" / "sleb-0123456789abcdef.json").write_text(json.dumps(record | {"note": "a benchmark text"}))
    (cache / "sleb" / "notes.json").write_text("{}")
    counts = pack_outcomes(cache, tmp_path / "p.parquet")
    assert (counts.shards, counts.sleb, counts.sleb_left_out) == (0, 1, ("notes.json", "sleb-0123456789abcdef.json"))
    assert "benchmark text" not in json.dumps(read_outcomes_pack(tmp_path / "p.parquet")[1])
    fresh = tmp_path / "fresh"
    assert unpack_outcomes(tmp_path / "p.parquet", fresh).sleb == 1
    assert json.loads((fresh / "sleb" / record_path.name).read_text()) == record
    again = sleb_search(scorer, texts, 2, key, cache_dir=fresh / "sleb", log=lambda _: None)
    assert again == result
    # a record with fewer steps is replaced, a complete one kept
    (fresh / "sleb" / record_path.name).write_text(json.dumps(record | {"omit": record["omit"][:1]}))
    assert unpack_outcomes(tmp_path / "p.parquet", fresh).sleb == 1
    assert unpack_outcomes(tmp_path / "p.parquet", fresh).sleb == 0


def test_missing_damaged_and_foreign_files_are_one_line_errors(scorer, tmp_path):
    run(scorer, tmp_path / "cache", SETS[:2], {"toy": TASKS["toy"][:4]})
    good = tmp_path / "good.parquet"
    pack_outcomes(tmp_path / "cache", good)
    table = pq.read_table(good)

    def fails(path, message):
        with pytest.raises(OutcomesPackError) as exc:
            unpack_outcomes(path, tmp_path / "into")
        text = str(exc.value)
        assert "\n" not in text and str(path) in text and message in text, text
        assert not (tmp_path / "into").exists()

    fails(tmp_path / "absent.parquet", "does not exist")
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[:-40])
    fails(cut, "not a whole Parquet file")
    plain = tmp_path / "plain.parquet"
    pq.write_table(table.replace_schema_metadata({}), plain)
    fails(plain, "is not a pudding outcomes progress file")
    other = tmp_path / "other.parquet"
    pq.write_table(table.replace_schema_metadata({b"pudding": b'{"format": "pudding-router-progress/1"}'}), other)
    fails(other, "format 'pudding-router-progress/1'")
    short = tmp_path / "short.parquet"
    pq.write_table(table.drop_columns(["pred_norm"]), short)
    fails(short, "columns ['pred_norm'] are missing")
    shuffled = tmp_path / "shuffled.parquet"  # one set's rows name other items than the chunk's other sets
    ids = table.column("item_id").to_pylist()
    ids[-1], ids[-2] = ids[-2], ids[-1]
    pq.write_table(table.set_column(3, "item_id", pa.array(ids)), shuffled)
    fails(shuffled, "lists other items")
    escape = tmp_path / "escape.parquet"  # a task name that would write outside the cache
    pq.write_table(table.set_column(0, "task", pa.array(["../up"] * table.num_rows)), escape)
    fails(escape, "names no valid task")
    with pytest.raises(OutcomesPackError, match=f"outcomes dir {tmp_path / 'nowhere'} does not exist"):
        pack_outcomes(tmp_path / "nowhere", tmp_path / "x.parquet")


def test_saver_seeds_only_from_an_existing_file_and_reports_a_failed_save(scorer, tmp_path):
    lines: list[str] = []
    saver = outcomes_saver(tmp_path / "cache", tmp_path / "p.parquet", log=lines.append, every=0.0)
    assert saver.seed() is None and not (tmp_path / "p.parquet").exists()
    assert saver.save() is None and "could not save" in lines[-1]  # no cache yet: reported, not raised
    run(scorer, tmp_path / "cache", SETS[:2], {"toy": TASKS["toy"][:4]})
    saver.maybe_save()
    assert read_outcomes_pack(tmp_path / "p.parquet")[1]["shards"] == 1
    assert outcomes_saver(tmp_path / "fresh", tmp_path / "p.parquet", log=lines.append).seed().written == 1


# ------------------------------------------------------------------------------------------ pudding compare


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_llm_dir):
    from pudding.router.bundle import export_bundle

    root = tmp_path_factory.mktemp("outpack")
    setup = {"encoder": tiny_encoder(root / "bert"), "dataset": tiny_dataset(root / "data")}
    module, _ = module_with_data(setup)
    return {"bundle": export_bundle(module, root / "bundle"), "llm": tiny_llm_dir, "data": write_piqa(root / "piqa")}


def eval_bundle(bundle, outcomes_dir, output, progress_file):
    from pudding.cli import main

    args = ["compare", "--bundle", bundle["bundle"], "--base", bundle["llm"], "--data_dir", bundle["data"]]
    args += ["--tasks", "piqa", "--dtype", "float32", "--device", "cpu", "--sleb_samples", 2]
    args += ["--outcomes_dir", outcomes_dir, "--outcomes_progress", progress_file, "--output", output]
    main([str(a) for a in args])
    return json.loads(output.read_text())


def test_eval_bundle_keeps_its_progress_in_the_file(bundle, tmp_path, monkeypatch, capsys):
    import pudding.search.sleb as sleb_module

    progress = tmp_path / "progress.parquet"
    real = outcomes_module.run_paths
    monkeypatch.setattr(outcomes_module, "run_paths", interrupted_after(real, calls=0))  # killed at the first chunk
    with pytest.raises(KeyboardInterrupt):
        eval_bundle(bundle, tmp_path / "o1", tmp_path / "r1.json", progress)
    info = read_outcomes_pack(progress)[1]
    assert info["shards"] == 0 and len(info["sleb"]) == 1  # the finished SLEB search is in the file

    def no_search(*args, **kwargs):
        raise AssertionError("SLEB was searched again")

    monkeypatch.setattr(sleb_module, "greedy_search", no_search)
    monkeypatch.setattr(outcomes_module, "run_paths", real)
    first = eval_bundle(bundle, tmp_path / "o2", tmp_path / "r2.json", progress)
    table, info = read_outcomes_pack(progress)
    wanted = {",".join(map(str, sorted(s))) for s in first["omission_sets"].values() if s is not None}
    assert info["shards"] == 1 and set(table.column("set_key").to_pylist()) == wanted  # dense, candidates, SLEB
    assert len(wanted) >= 5 and "" in wanted
    # beside the table, its per-item records reproduce every row's average, and the router's choices carry no label
    records = read_item_records(tmp_path / "r2.items.parquet")[0].to_pylist()
    for name, average in first["average"].items():
        mine = [r for r in records if r["row"] == name]
        assert sum(r["weight"] * r["correct"] for r in mine) / sum(r["weight"] for r in mine) == pytest.approx(average)
    choices = read_routed_choices(tmp_path / "r2.choices.parquet")[0]
    assert choices.column_names == ["row", "task", "item_id", "omit"]
    assert choices.num_rows == first["results"]["PuDDing (router)"]["piqa"]["n"]

    def no_scoring(*args, **kwargs):
        raise AssertionError("an outcome was scored again")

    monkeypatch.setattr(outcomes_module, "run_paths", no_scoring)
    capsys.readouterr()
    second = eval_bundle(bundle, tmp_path / "o3", tmp_path / "r3.json", progress)
    assert "1 shards written" in capsys.readouterr().out
    for part in ("results", "average", "omission_sets", "routing_histogram"):
        assert second[part] == first[part]
    assert pq.read_table(progress).equals(table) and read_outcomes_pack(progress)[1] == info


def test_eval_outcomes_progress_needs_a_bundle_and_a_readable_file(bundle, tmp_path, capsys):
    from pudding.cli import main

    for extra, message in [
        (["eval"], "unrecognized arguments: --outcomes_progress"),  # pudding eval keeps no outcomes
        (["compare", "--bundle", str(bundle["bundle"])], "is a folder, give a file"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main([*extra, "--tasks", "piqa", "--outcomes_progress", str(tmp_path)])
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1 and message in err[0], err
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(SystemExit) as exc:
        eval_bundle(bundle, tmp_path / "o", tmp_path / "r.json", bad)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and f"outcomes progress file {bad}: not a whole Parquet" in err[0]


def test_eval_with_a_bundle_points_to_compare(capsys):
    from pudding.cli import main

    for bundle in (["--bundle", "default"], ["--bundle=default"]):
        with pytest.raises(SystemExit) as exc:
            main(["eval", "--tasks", "piqa", *bundle])
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1, err
        assert "option bundle:" in err[0] and "pudding compare --bundle default" in err[0]
