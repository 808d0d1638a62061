"""The ``pudding`` command line: list options, YAML configs, JSON output, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import PIQA, tiny_model, write_piqa

from pudding.cli import main as pudding
from pudding.core.errors import OptionError
from pudding.core.options import as_int_list, as_str_list


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
    return write_piqa(tmp_path_factory.mktemp("data"))


def _eval(tmp_path, tiny_dir, piqa_dir, *extra):
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}.json"
    args = ["eval", "--base", str(tiny_dir), "--data_dir", str(piqa_dir), "--router_fraction", "0.5"]
    pudding([*args, "--progress", "false", "--output", str(out), *extra])
    return json.loads(out.read_text())


def test_eval_writes_json_and_list_syntaxes_agree(tmp_path, tiny_dir, piqa_dir, capsys):
    a = _eval(tmp_path, tiny_dir, piqa_dir, "--tasks", "piqa", "--omit", "1,3")
    b = _eval(tmp_path, tiny_dir, piqa_dir, "--tasks", "[piqa]", "--omit", "[1, 3]")
    assert a["results"] == b["results"]
    assert set(a) == {"results", "average", "omission_sets", "blocks_kept", "kinds", "config", "seconds"}
    assert a["blocks_kept"] == {"omit": 4.0} and a["kinds"] == {"omit": "static"}
    assert all((Path(out).with_suffix(s)).is_file() for out in tmp_path.glob("out*.json") for s in (".md", ".csv"))
    res = a["results"]["omit"]["piqa"]
    assert set(res) == {"acc", "acc_norm", "n", "acc_stderr", "acc_norm_stderr"} and 0 < res["n"] < len(PIQA)
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


def write_candidates(path: Path, tiny_dir: Path) -> Path:
    """Two 2-block candidates of the tiny model (the second's blocks out of order, as a search records them)."""
    cands = [{"omit": [1, 2], "task": "piqa", "loss": "likelihood"}, {"omit": [4, 3], "task": "piqa", "loss": "margin"}]
    path.write_text(yaml.safe_dump({"base_model": str(tiny_dir), "num_blocks": 6, "num_omit": 2, "candidates": cands}))
    return path


def test_eval_candidates_table(tmp_path, tiny_dir, piqa_dir, capsys):
    cand = write_candidates(tmp_path / "cands.yaml", tiny_dir)
    report = _eval(tmp_path, tiny_dir, piqa_dir, "--tasks", "piqa", "--candidates", str(cand))
    assert list(report["results"]) == ["dense", "piqa/likelihood", "piqa/margin"]
    assert set(report) == {"results", "average", "omission_sets", "blocks_kept", "kinds", "config", "seconds"}
    assert report["config"]["candidates_sha256"] and list(report["average"]) == list(report["results"])
    assert report["omission_sets"]["piqa/margin"] == [4, 3]
    header = [line for line in capsys.readouterr().out.splitlines() if line.startswith("acc %")][0]
    assert "dense" in header and "piqa/margin" in header


def test_eval_omit_and_candidates_are_rows_of_one_table(tmp_path, tiny_dir, piqa_dir):
    cand = write_candidates(tmp_path / "cands.yaml", tiny_dir)
    both = _eval(tmp_path, tiny_dir, piqa_dir, "--tasks", "piqa", "--candidates", str(cand), "--omit", "1,2")
    alone = _eval(tmp_path, tiny_dir, piqa_dir, "--tasks", "piqa", "--candidates", str(cand))
    assert list(both["results"]) == ["omit", "dense", "piqa/likelihood", "piqa/margin"]
    assert both["results"]["omit"] == both["results"]["piqa/likelihood"] == alone["results"]["piqa/likelihood"]
    assert {name: both["results"][name] for name in alone["results"]} == alone["results"]


def test_unknown_command(capsys):
    with pytest.raises(SystemExit) as exc:
        pudding(["frobnicate"])
    assert exc.value.code == 2 and "unknown command 'frobnicate'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- option groups
def _command_options():
    from pudding.cli.bench import BenchOptions
    from pudding.cli.compare import CompareOptions
    from pudding.cli.curve import CurveOptions
    from pudding.cli.dataset import DatasetOptions
    from pudding.cli.eval import EvalOptions
    from pudding.cli.generate import GenerateOptions
    from pudding.cli.release import ReleaseOptions
    from pudding.search import SearchOptions

    return {
        "eval": EvalOptions,
        "compare": CompareOptions,
        "curve": CurveOptions,
        "candidates": SearchOptions,
        "dataset": DatasetOptions,
        "bench": BenchOptions,
        "release": ReleaseOptions,
        "generate": GenerateOptions,
    }


@pytest.mark.parametrize(
    "command", ["eval", "compare", "curve", "candidates", "dataset", "bench", "release", "generate"]
)
def test_help_lists_every_option_flat_with_docstring_and_default(command, capsys):
    """Each field of the command's options dataclass is a flat flag whose help has its docstring and default."""
    from dataclasses import MISSING, fields

    cls = _command_options()[command]
    with pytest.raises(SystemExit) as exc:
        pudding([command, "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--config" in text
    for field in fields(cls):
        flag = f"--{field.name} "
        assert flag in text, (command, field.name)
        after = text.split(flag, 2)[-1]  # the option's entry (the second mention; the usage line is the first)
        doc, _, rest = after.partition("(type: ")
        words = [w for w in doc.split() if not (w.rstrip(",").isupper() or w.startswith(("--", "{")))]  # no metavar
        assert len(words) >= 3, (command, field.name, doc)  # a real docstring
        assert field.default is not MISSING
        shown = "null" if field.default is None else str(field.default)
        type_and_default = "".join(rest.split(")")[0].split())  # wrapping may break a long default
        assert type_and_default.endswith(f"default:{shown.replace(' ', '')}"), (command, field.name, rest[:200])


def test_options_parse_flat_flags_and_flat_yaml_config(tmp_path):
    from pudding.cli.eval import EvalOptions
    from pudding.cli.parse import parse_options

    config = tmp_path / "eval.yaml"
    config.write_text(yaml.safe_dump({"base": "some/model", "tasks": ["piqa", "boolq"], "limit": 5, "omit": "3,4"}))
    opts = parse_options(EvalOptions, ["--config", str(config), "--limit", "7", "--dtype", "float32"], "pudding eval")
    assert isinstance(opts, EvalOptions)
    assert (opts.base, opts.tasks, opts.limit, opts.omit, opts.dtype) == (
        "some/model",
        ("piqa", "boolq"),
        7,
        [3, 4],
        "float32",
    )
    assert (opts.router_fraction, opts.batch_tokens, opts.device, opts.output) == (0.5, "auto", "auto", None)


@pytest.mark.parametrize(
    ("command", "values", "message"),
    [
        ("eval", {"limit": 0}, "option limit: must be at least 1, got 0"),
        ("eval", {"dtype": "fp8"}, "option dtype: 'fp8'"),
        ("eval", {"device": "gpu"}, "option device: 'gpu'"),
        ("eval", {"batch_tokens": 0}, "option batch_tokens"),
        ("eval", {"average_metric": "f1"}, "option average_metric"),
        ("eval", {"router_fraction": 1.0}, "option router_fraction"),
        ("eval", {"tasks": "piqa,nope"}, "option tasks: unknown task 'nope'"),
        ("candidates", {"losses": "likelihood,nope"}, "option losses: unknown loss 'nope'"),
        ("candidates", {"num_samples": 0}, "option num_samples"),
        ("candidates", {"keep_first": -1}, "option keep_first"),
        ("dataset", {"items_per_batch": 0}, "option items_per_batch"),
        ("dataset", {"limit": -3}, "option limit"),
        ("bench", {"repeats": 0}, "option repeats: must be at least 1, got 0"),
        ("bench", {"lengths": "64,0"}, "option lengths"),
        ("bench", {"threads": 0}, "option threads"),
        ("generate", {"max_new_tokens": 0}, "option max_new_tokens: must be at least 1, got 0"),
        ("release", {"dataset": None}, "options dataset and bundle: give one of the two"),
        ("release", {"bundle": "b"}, "options dataset and bundle: give one of the two"),
    ],
)
def test_option_groups_check_themselves(command, values, message):
    """Constructing a command's options checks every group's fields (the command line is one way to construct)."""
    from pudding.core.errors import PuddingError

    with pytest.raises(PuddingError, match=message.replace("(", r"\(")):
        _command_options()[command](**values)


def test_option_groups_are_shared_not_repeated():
    """The shared fields are declared by the groups; commands inherit them (one docstring, one check each)."""
    from dataclasses import fields

    from pudding.core.io import OutputOptions
    from pudding.core.llm import LLMOptions
    from pudding.core.tasks import TaskOptions
    from pudding.routed.evaluate import BundleSettings
    from pudding.routerdata.predict import ScoringModule

    opts = _command_options()
    for name in ("eval", "compare", "curve", "candidates", "dataset", "bench"):
        assert issubclass(opts[name], LLMOptions) and issubclass(opts[name], OutputOptions)
    for name in ("eval", "compare", "curve", "candidates", "dataset"):
        assert issubclass(opts[name], TaskOptions)
    for name in ("compare", "curve"):
        assert issubclass(opts[name], BundleSettings)
    llm = {f.name for f in fields(LLMOptions)}
    assert llm == {"base", "dtype", "device", "batch_tokens", "cache_dir", "device_map"}
    # Lightning's --trainer.* places the dataset build: its LLM may not name another device
    with pytest.raises(OptionError, match="option device: 'cpu'; pudding dataset runs where"):
        ScoringModule("c.yaml", llm=LLMOptions(device="cpu"))
    # a candidate search always has a base model and an output; the defaults are the command's own
    assert (opts["candidates"]().base, opts["candidates"]().output) == ("default", "checkpoints/candidates.yaml")
    assert opts["eval"]().base is None


def test_bundle_settings_are_the_compare_and_curve_options_of_the_same_name():
    """``pudding compare`` and ``pudding curve`` options are BundleSettings (with the LLM's): the bundle evaluation
    reads them by name; keyword overrides replace fields, and a misspelt one is an error."""
    from dataclasses import replace

    from pudding.cli.compare import CompareOptions
    from pudding.routed.evaluate import BundleSettings

    values = dict(limit=7, dtype="float32", device="cpu", batch_tokens=256, cache_dir="models", outcomes_dir="outcomes")
    values |= dict(sleb=False, sleb_samples=3, corpus="corpus.txt")
    settings = replace(CompareOptions(base="given", **values), base="resolved")
    assert BundleSettings.resolve(settings, {}) == CompareOptions(base="resolved", **values)
    assert BundleSettings.resolve(settings, {"limit": 2}).limit == 2 and settings.limit == 7
    assert BundleSettings.resolve(None, {}) == BundleSettings()
    with pytest.raises(TypeError, match="sleb_sample"):
        BundleSettings.resolve(settings, {"sleb_sample": 2})
