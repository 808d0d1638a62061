"""The ``pudding`` command line: list options, YAML configs, JSON output, clear errors."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import tiny_model

from pudding.cli import main as pudding
from pudding.options import as_int_list, as_str_list

PIQA = [
    ("How do I open a jar?", "Twist the lid counter-clockwise.", "Twist the lid with a hammer.", 0),
    ("How to cool soup fast?", "Put it in the oven.", "Stir it in a bowl over ice.", 1),
    ("How to dry wet shoes?", "Stuff them with newspaper.", "Fill them with water.", 0),
    ("How to keep bread fresh?", "Leave it in the sun.", "Store it in a sealed bag.", 1),
] * 3


def test_list_options():
    assert as_int_list("5,9,13") == as_int_list([5, 9, 13]) == as_int_list("[5, 9, 13]") == [5, 9, 13]
    assert as_int_list("") == as_int_list(None) == []
    assert as_int_list(7) == [7]
    assert as_str_list("piqa, arc_easy") == as_str_list(["piqa", "arc_easy"]) == ["piqa", "arc_easy"]
    with pytest.raises(ValueError, match="option omit: 'x'"):
        as_int_list("1,x", "omit")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama", len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def piqa_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "piqa").mkdir()
    rows = [json.dumps({"goal": f"{g} ({i})", "sol1": a, "sol2": b}) for i, (g, a, b, _) in enumerate(PIQA)]
    (root / "piqa" / "valid.jsonl").write_text("\n".join(rows) + "\n")
    (root / "piqa" / "valid-labels.lst").write_text("".join(f"{label}\n" for *_, label in PIQA))
    return root


def _eval(tmp_path, tiny_dir, piqa_dir, *extra):
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}.json"
    args = ["eval", "--base", str(tiny_dir), "--data_dir", str(piqa_dir), "--router_fraction", "0.5"]
    pudding([*args, "--progress", "false", "--output", str(out), *extra])
    return json.loads(out.read_text())


def test_eval_writes_json_and_list_syntaxes_agree(tmp_path, tiny_dir, piqa_dir, capsys):
    a = _eval(tmp_path, tiny_dir, piqa_dir, "--tasks", "piqa", "--omit", "1,3")
    b = _eval(tmp_path, tiny_dir, piqa_dir, "--tasks", "[piqa]", "--omit", "[1, 3]")
    assert a["results"] == b["results"]
    assert set(a) == {"results", "average", "omission_sets", "config", "seconds"}
    res = a["results"]["omit"]["piqa"]
    assert set(res) == {"acc", "acc_norm", "n"} and 0 < res["n"] < len(PIQA)
    assert a["average"] == {"omit": res["acc"]} and a["omission_sets"] == {"omit": [1, 3]}
    assert a["config"]["omit"] == [1, 3] and a["config"]["base"] == str(tiny_dir) and a["config"]["num_blocks"] == 6
    printed = capsys.readouterr().out
    assert "reserved for router training" in printed and "piqa" in printed
    dense = _eval(tmp_path, tiny_dir, piqa_dir, "--tasks", "piqa", "--omit", "")
    assert dense["config"]["omit"] == [] and dense["results"]["dense"]["piqa"]["n"] == res["n"]
    assert dense["omission_sets"] == {"dense": []}


def test_eval_from_yaml_config_with_override(tmp_path, tiny_dir, piqa_dir):
    config = tmp_path / "eval.yaml"
    config.write_text(yaml.safe_dump({"tasks": ["piqa"], "omit": [2], "limit": 1}))
    report = _eval(tmp_path, tiny_dir, piqa_dir, "--config", str(config), "--limit", "2")
    assert report["config"]["omit"] == [2] and report["results"]["omit"]["piqa"]["n"] == 2
    assert report["config"]["dtype_requested"] == "auto" and report["config"]["dtype"] in ("float32", "bfloat16")
    assert report["config"]["dtype_reason"]  # why auto chose it on this machine


def test_eval_candidates_table(tmp_path, tiny_dir, piqa_dir, capsys):
    cand = tmp_path / "cands.yaml"
    cand.write_text(
        yaml.safe_dump(
            {
                "base_model": str(tiny_dir),
                "num_blocks": 6,
                "num_omit": 2,
                "candidates": [
                    {"omit": [1, 2], "task": "piqa", "loss": "likelihood"},
                    {"omit": [4, 3], "task": "piqa", "loss": "margin"},
                ],
            }
        )
    )
    report = _eval(tmp_path, tiny_dir, piqa_dir, "--tasks", "piqa", "--candidates", str(cand))
    assert list(report["results"]) == ["dense", "piqa/likelihood", "piqa/margin"]
    assert set(report) == {"results", "average", "omission_sets", "config", "seconds"}
    assert report["config"]["candidates_sha256"] and list(report["average"]) == list(report["results"])
    assert report["omission_sets"]["piqa/margin"] == [4, 3]
    header = [line for line in capsys.readouterr().out.splitlines() if line.startswith("acc %")][0]
    assert "dense" in header and "piqa/margin" in header


def test_unknown_command(capsys):
    with pytest.raises(SystemExit) as exc:
        pudding(["frobnicate"])
    assert exc.value.code == 2 and "unknown command 'frobnicate'" in capsys.readouterr().err
