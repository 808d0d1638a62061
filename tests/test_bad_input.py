"""Bad inputs through the real entry points: exit code 2, one line naming the file/field/option, no model loaded.

Every case runs ``pudding.cli.main(argv)`` as a user's shell would, with the model loader replaced by one that
fails the test if called: each check here must fire before any model loads. The base model is a config-only
folder (no weights), which is all the checks read. An output file that exists beforehand must be unchanged.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import PIQA, REPO, module_with_data, tiny_config, tiny_dataset, tiny_encoder, write_piqa

from pudding.cli import main as pudding
from pudding.cli.report import run_command
from pudding.core.errors import PuddingError

SENTINEL = "an earlier result that must survive\n"


@pytest.fixture
def model_dir(tmp_path):
    """A 6-block Llama config without weights: enough for every check, useless for a load."""
    path = tmp_path / "tiny"
    tiny_config("llama", vocab_size=128).save_pretrained(path)
    return path


@pytest.fixture
def data_dir(tmp_path):
    return write_piqa(tmp_path / "data")


def write_candidates(path, base_model, num_blocks=6, sets=((1, 2), (3, 4))):
    cands = [{"omit": list(s), "task": "piqa", "loss": f"loss{i}"} for i, s in enumerate(sets)]
    data = {"base_model": str(base_model), "num_blocks": num_blocks, "num_omit": len(sets[0]), "candidates": cands}
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(autouse=True)
def no_model_load(monkeypatch):
    """Any model load fails the test: every check in this file must come first."""

    def load_base(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was reported")

    import importlib

    # every module that imports load_base by name is imported (and patched) here: one first imported while the
    # loader is patched would keep the fake after this test
    names = ["pudding.core.models.loading", "pudding.cli.eval", "pudding.routerdata.predict", "pudding.search.runs"]
    names += [
        "pudding.routed.model",
        "pudding.routed.evaluate",
        "pudding.router.zeroshot",
        "pudding.routerdata.release",
    ]
    modules = [importlib.import_module(name) for name in names]  # all imported before any is patched
    for module in modules:
        if hasattr(module, "load_base"):
            monkeypatch.setattr(module, "load_base", load_base)


def one_error(capsys, main, prefix: str, argv, expected, output=None, ignore: tuple[str, ...] = ()) -> str:
    """Run ``main(argv)``; assert exit code 2 and one stderr line (blank lines and lines starting with one of
    ``ignore`` aside) that starts with ``prefix`` and holds each of ``expected``, and that ``output`` (written
    beforehand) is unchanged. Returns the line."""
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(SENTINEL)
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(ignore)]
    assert exc.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    for text in expected:
        assert str(text) in lines[0], (text, lines[0])
    if output is not None:
        assert output.read_text() == SENTINEL
    return lines[0]


def fails(capsys, argv, *expected, output=None):
    """``pudding argv`` fails with one line ``pudding <cmd>: error: ...`` (:func:`one_error`; the dtype note aside)."""
    prefix = f"pudding {argv[0]}: error: "
    return one_error(capsys, pudding, prefix, argv, expected, output, ignore=("[pudding] dtype",))


def eval_args(model_dir, data_dir, *extra):
    return ["eval", "--base", model_dir, "--data_dir", data_dir, "--tasks", "piqa", "--progress", "false", *extra]


# ----------------------------------------------------------------------------------------- the ten cases
def test_unknown_task(capsys, model_dir, data_dir, tmp_path):
    out = tmp_path / "out.json"
    args = eval_args(model_dir, data_dir, "--tasks", "piqa,nope", "--output", out, "--overwrite", "true")
    fails(capsys, args, "option tasks", "unknown task 'nope'", "arc_easy", output=out)


@pytest.mark.parametrize(("omit", "message"), [("99", "[99] are outside 0..5"), ("3,3", "listed more than once")])
def test_bad_omit_is_checked_before_loading(capsys, model_dir, data_dir, omit, message):
    fails(capsys, eval_args(model_dir, data_dir, "--omit", omit), "option omit", message, "has 6 blocks")


def test_malformed_candidate_yaml(capsys, model_dir, data_dir, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("candidates: [1, 2\n")
    fails(capsys, eval_args(model_dir, data_dir, "--candidates", broken), broken, "not valid YAML")


def test_missing_data_folder(capsys, model_dir, tmp_path):
    missing = tmp_path / "no-such-data"
    fails(capsys, eval_args(model_dir, missing), f"option data_dir: {missing} is not a folder")
    (missing / "boolq").mkdir(parents=True)  # the folder exists, the task's sub-folder does not
    fails(capsys, eval_args(model_dir, missing), "piqa", "valid.jsonl", f"directory {missing / 'piqa'} does not exist")


def test_labels_file_shorter_than_records(capsys, model_dir, tmp_path):
    data = write_piqa(tmp_path / "short", labels=[0] * (len(PIQA) - 2))
    labels = data / "piqa" / "valid-labels.lst"
    fails(capsys, eval_args(model_dir, data), labels, f"{len(PIQA) - 2} labels for {len(PIQA)} records")


def test_limit_zero(capsys, model_dir, data_dir):
    fails(capsys, eval_args(model_dir, data_dir, "--limit", "0"), "option limit", "got 0")


def command_args(command: str, model_dir, data_dir, tmp_path) -> list:
    """A valid call of ``command`` on the tiny model and data, to which a test adds one bad option."""
    if command == "eval":
        return eval_args(model_dir, data_dir)
    if command == "candidates":
        return ["candidates", "--base", model_dir, "--data_dir", data_dir, "--tasks", "piqa"]
    return ["dataset", "--candidates", write_candidates(tmp_path / "c.yaml", model_dir), "--data_dir", data_dir]


@pytest.mark.parametrize("command", ["eval", "candidates", "dataset"])
def test_router_fraction_out_of_range(capsys, model_dir, data_dir, tmp_path, command):
    args = command_args(command, model_dir, data_dir, tmp_path)
    out = tmp_path / "out" / "result"
    args += ["--router_fraction", "1.5", "--output", out, "--overwrite", "true"]
    fails(capsys, args, "option router_fraction", "1.5", output=out)


@pytest.mark.parametrize("command", ["eval", "candidates", "dataset"])
def test_output_whose_parent_is_a_file(capsys, model_dir, data_dir, tmp_path, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    args = command_args(command, model_dir, data_dir, tmp_path)
    fails(capsys, [*args, "--output", blocker / "sub" / "out"], "option output", f"{blocker} is a file, not a folder")


def test_malformed_candidate_file_for_dataset(capsys, data_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"base_model": "x", "num_blocks": 6, "num_omit": 2, "candidates": [{"omit": [1]}]}))
    out = tmp_path / "ds"
    fails(
        capsys, ["dataset", "--candidates", bad, "--data_dir", data_dir, "--output", out], bad, "at least 2 candidates"
    )


# ------------------------------------------------------------------------------------------------- more cases
@pytest.mark.parametrize("tasks", ["", "[]", "piqa,,boolq"])
def test_empty_task_list(capsys, model_dir, data_dir, tasks):
    fails(capsys, eval_args(model_dir, data_dir, "--tasks", tasks), "option tasks", "empty task name")


def test_task_with_no_items_is_an_error_not_nan(capsys, model_dir, tmp_path):
    data = write_piqa(tmp_path / "empty", rows=[], labels=[])
    fails(capsys, eval_args(model_dir, data), "piqa: no evaluation items")


def test_non_utf8_data_file(capsys, model_dir, data_dir):
    path = data_dir / "piqa" / "valid.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"dry", b"dr\xff")
    path.write_bytes(b"\n".join(lines))
    fails(capsys, eval_args(model_dir, data_dir), f"{path}, line 3", "not UTF-8", "0xff")


def test_omit_with_candidates_checks_the_omitted_blocks_against_the_file_s_model(capsys, model_dir, data_dir, tmp_path):
    """``--omit`` and ``--candidates`` together are rows of one table (no rule excludes them); the omitted blocks are
    still checked against the base model before it loads."""
    cands = write_candidates(tmp_path / "c.yaml", model_dir)
    fails(capsys, eval_args(model_dir, data_dir, "--omit", "99", "--candidates", cands), "option omit: omission set")


@pytest.mark.parametrize("command", ["eval", "dataset"])
def test_candidate_file_for_another_base_model(capsys, model_dir, data_dir, tmp_path, command):
    other = write_candidates(tmp_path / "other.yaml", "some/other-model")
    deeper = write_candidates(tmp_path / "deeper.yaml", model_dir, num_blocks=30)
    for path, message in ((other, "made for base model 'some/other-model'"), (deeper, "'num_blocks' is 30")):
        if command == "eval":
            args = eval_args(model_dir, data_dir, "--candidates", path)
        else:
            args = ["dataset", "--candidates", path, "--base", model_dir, "--data_dir", data_dir]
            args += ["--output", tmp_path / "ds", "--tasks", "piqa"]
        fails(capsys, args, path, message)


def test_existing_output_needs_overwrite(capsys, model_dir, data_dir, tmp_path):
    out = tmp_path / "res.json"
    fails(capsys, eval_args(model_dir, data_dir, "--output", out), "option output", "--overwrite", output=out)
    cands = tmp_path / "cands.yaml"
    args = ["candidates", "--base", model_dir, "--data_dir", data_dir, "--tasks", "piqa", "--output", cands]
    fails(capsys, args, "option output", "--overwrite", output=cands)


def test_nan_only_router_scores(capsys, data_dir, tmp_path):
    from pudding.core.candidates import file_hash
    from pudding.core.progress import META_KEY
    from pudding.core.tasks import DataOptions, router_items
    from pudding.routerdata.scores import SCORES_FORMAT
    from pudding.routerdata.units import items_digest

    cands = write_candidates(tmp_path / "c.yaml", "tiny")
    items, _ = router_items("piqa", DataOptions(data_dir=str(data_dir)))
    meta = {
        "candidates_sha256": file_hash(cands),
        "candidates_file": str(cands),
        "num_candidates": 2,
        "tasks": ["piqa"],
        "router_splits": {"piqa": "validation"},
        "items_sha256": {"piqa": items_digest({"piqa": items})},
        "router_fraction": 0.5,
        "split_seed": 0,
        "limit": None,
    }
    nan = [math.nan, math.nan]
    table = pa.table(
        {
            "task": ["piqa"] * len(items),
            "item_id": [item.item_id for item in items],
            "scores": pa.array([nan] * len(items), type=pa.list_(pa.float32(), 2)),
            "dense_score": pa.array([math.nan] * len(items), type=pa.float32()),
        }
    ).replace_schema_metadata({META_KEY: json.dumps({"format": SCORES_FORMAT, "dataset_meta": meta}).encode()})
    scores = tmp_path / "scores.parquet"
    pq.write_table(table, scores)
    out = tmp_path / "ds"
    args = ["dataset", "--scores", scores, "--candidates", cands, "--data_dir", data_dir, "--output", out]
    fails(capsys, args, scores, f"none of the {len(items)} rows has finite scores", items[0].item_id)
    assert not out.exists()


# ------------------------------------------------------------------------------------------ router and bundles
@pytest.fixture(scope="module")
def router(tmp_path_factory):
    """A tiny router dataset and a bundle exported from a tiny router set up on it (6-block base 'tiny-llm')."""
    root = tmp_path_factory.mktemp("router")
    setup = {"encoder": tiny_encoder(root / "bert"), "dataset": tiny_dataset(root / "data"), "root": root}
    module, _ = module_with_data(setup)
    from pudding.router.bundle import export_bundle

    setup["bundle"] = export_bundle(module, root / "bundle")
    return setup


def train(capsys, argv, *expected, output=None, after_encoder_load=False):
    """Like :func:`fails`, for ``pudding-train``; ``output`` (written beforehand) must be unchanged. A check that
    needs the data (``after_encoder_load``) comes after the encoder's weight-loading bar."""
    from pudding.cli.train import main as pudding_train

    ignore = ("Loading weights",) if after_encoder_load else ()
    one_error(capsys, pudding_train, "pudding-train: error: ", argv, expected, output, ignore)


def test_router_dataset_missing_or_not_a_router_dataset(capsys, router, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bundle_out = tmp_path / "checkpoints" / "router" / "bundle"
    plain = tmp_path / "plain"
    plain.mkdir()
    base = ["fit", "--model.encoder", router["encoder"], "--trainer.fast_dev_run", "true", "--data.datasets"]
    train(capsys, [*base, tmp_path / "nope"], f"router dataset {tmp_path / 'nope'} does not exist")
    train(capsys, [*base, plain], f"{plain} is not a router dataset", "pudding_meta.json is missing")
    assert not bundle_out.exists()
    # an existing bundle is refused before training, and kept
    (bundle_out / "router.json").parent.mkdir(parents=True)
    train(capsys, [*base, router["dataset"]], "bundle folder", "--overwrite_bundle", output=bundle_out / "router.json")


def test_router_dataset_with_only_non_finite_scores(capsys, router, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from datasets import Dataset

    from pudding.routerdata import save_dataset
    from pudding.routerdata.dataset import load_router_dataset

    dataset, meta = load_router_dataset(router["dataset"])
    cols = dataset.to_dict()
    cols["scores"] = [[math.nan] * len(row) for row in cols["scores"]]  # make_dataset refuses this; written by hand
    nan_ds = save_dataset(Dataset.from_dict(cols, features=dataset.features), meta, tmp_path / "nan")
    argv = ["fit", "--model.encoder", router["encoder"], "--trainer.fast_dev_run", "true"]
    argv += ["--data.datasets", f"[{router['dataset']},{nan_ds}]"]
    train(capsys, argv, f"router dataset {nan_ds}: none of its 48 rows has finite scores", after_encoder_load=True)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--data.val_fraction", "1.0", "option data.val_fraction"),
        ("--data.batch_size", "0", "data.batch_size (0"),
        ("--model.lr", "0", "model.lr (0.0)"),
    ],
)
def test_router_option_out_of_range(capsys, router, tmp_path, monkeypatch, option, value, message):
    monkeypatch.chdir(tmp_path)
    argv = ["fit", "--model.encoder", router["encoder"], "--data.datasets", router["dataset"], option, value]
    train(capsys, [*argv, "--trainer.fast_dev_run", "true"], message)


def test_export_of_a_missing_checkpoint(capsys, tmp_path):
    train(capsys, ["export", tmp_path / "no.ckpt", "--output", tmp_path / "b"], "argument checkpoint", "no.ckpt")


def bundle_args(command, bundle, *extra):
    if command == "compare":
        return ["compare", "--bundle", bundle, "--tasks", "piqa", *extra]
    return ["bench", "--bundle", bundle, "--lengths", "8", "--repeats", "1", *extra]


@pytest.mark.parametrize("command", ["compare", "bench"])
def test_bundle_for_another_base_model(capsys, router, data_dir, tmp_path, command):
    deeper = tmp_path / "deeper"
    tiny_config("llama", vocab_size=128, num_layers=8).save_pretrained(deeper)
    out = tmp_path / "out" / "result.json"
    args = bundle_args(command, router["bundle"], "--base", deeper, "--output", out, "--overwrite", "true")
    if command == "compare":
        args += ["--data_dir", data_dir]
    fails(capsys, args, f"router bundle {router['bundle']}", "with 6 blocks", f"{str(deeper)!r} has 8", output=out)


@pytest.mark.parametrize("command", ["compare", "bench"])
@pytest.mark.parametrize("missing", ["router.safetensors", "candidates.yaml", "encoder/config.json"])
def test_bundle_missing_a_file(capsys, router, data_dir, tmp_path, command, missing):
    import shutil

    broken = tmp_path / "bundle"
    shutil.copytree(router["bundle"], broken)
    (broken / missing).unlink()
    out = tmp_path / "result.json"
    args = bundle_args(command, broken, "--output", out, "--overwrite", "true")
    if command == "compare":
        args += ["--data_dir", data_dir]
    fails(capsys, args, f"router bundle {broken}: file {missing} is missing", output=out)


def test_bench_output_is_checked_before_loading(capsys, router, tmp_path):
    out = tmp_path / "bench.json"
    fails(capsys, bundle_args("bench", router["bundle"], "--output", out), "option output", "--overwrite", output=out)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    fails(capsys, bundle_args("bench", router["bundle"], "--output", blocker / "b.json"), f"{blocker} is a file")
    fails(capsys, bundle_args("bench", router["bundle"], "--lengths", "0"), "option lengths")


# ---------------------------------------------------------------------------------------------------- the wrapper
def test_debug_shows_the_traceback_and_bugs_keep_theirs(monkeypatch, model_dir, data_dir):
    with pytest.raises(PuddingError, match="option limit"):
        pudding([str(a) for a in eval_args(model_dir, data_dir, "--limit", "0", "--debug")])
    monkeypatch.setenv("PUDDING_DEBUG", "1")
    with pytest.raises(PuddingError, match="option limit"):
        pudding([str(a) for a in eval_args(model_dir, data_dir, "--limit", "0")])

    def bug(argv):
        raise KeyError("a bug")

    monkeypatch.delenv("PUDDING_DEBUG")
    with pytest.raises(KeyError):
        run_command("pudding x", bug, [])


def test_os_error_on_a_named_path_is_one_line(capsys, tmp_path):
    def unreadable(argv):
        open(tmp_path / "missing.txt")  # noqa: SIM115

    with pytest.raises(SystemExit) as exc:
        run_command("pudding x", unreadable, [])
    assert exc.value.code == 2
    assert capsys.readouterr().err == f"pudding x: error: {tmp_path / 'missing.txt'}: No such file or directory\n"


def test_real_process_prints_one_line_and_exits_2(model_dir, data_dir):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("PUDDING_DEBUG", None)
    args = [sys.executable, "-m", "pudding.cli", *map(str, eval_args(model_dir, data_dir, "--omit", "99"))]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "pudding eval: error: option omit: omission set [99]: block indices [99] are outside 0..5 "
        f"(base model {str(model_dir)!r} has 6 blocks)"
    ]


def test_block_count_comes_from_the_header_not_the_weights(model_dir):
    """The checks read a model's size from its config, or for GGUF from the key-value header (no de-quantising)."""
    from pudding.core.models.loading import base_num_blocks, default_gguf_path, gguf_metadata

    assert base_num_blocks(str(model_dir)) == 6
    meta = gguf_metadata(default_gguf_path(), {"general.architecture"})
    assert meta == {"general.architecture": "llama", "llama.block_count": 30}
    assert base_num_blocks("default") == 30
