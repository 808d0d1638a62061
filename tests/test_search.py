"""Candidate search: greedy result equals brute force and the naive search, barriers, memo, resume, file errors."""

from __future__ import annotations

import pytest
import yaml

from pudding.candidates import CandidateFileError, load_candidates
from pudding.scoring import Scorer
from pudding.search import (
    FastEvaluator,
    NaiveEvaluator,
    SearchError,
    SearchOptions,
    check_barriers,
    choice_requests,
    get_loss,
    greedy_search,
    pick,
    removable,
    run_search,
)
from pudding.search import runs as runs_module
from pudding.search.objectives import (
    gold_requests,
    likelihood_loss,
    margin_loss,
    requests_for,
    sample_indices,
)
from pudding.tasks import Item


def _item(task: str, i: int, context: str, choices: list[str], gold: int) -> Item:
    return Item(task, f"{task}-{i}", tuple((context, " " + c) for c in choices), tuple(choices), gold, context)


def _items(task: str = "piqa") -> list[Item]:
    """Small synthetic multiple-choice items: shared contexts, uneven choice counts, one WinoGrande-like item."""
    items = [
        _item(task, 0, "Question: What do bees make?\nAnswer:", ["honey", "steel beams", "rain"], 0),
        _item(task, 1, "The capital of France is", ["Paris", "a small dog"], 0),
        _item(task, 2, "To boil water, you", ["heat it on a stove", "put it in a freezer", "paint it", "sing"], 0),
        _item(task, 3, "Cats usually", ["sleep a lot during the day", "fly"], 1),
    ]
    wino = Item(
        task,
        f"{task}-wino",
        tuple((f"Anna gave Beth the book because {name}", " was done.") for name in ("Anna", "Beth")),
        ("Anna", "Beth"),
        0,
        "Anna gave Beth the book because _ was done.",
    )
    return [*items, wino]


@pytest.fixture
def model(tiny_llama):
    return tiny_llama


def test_gold_only_likelihood_equals_likelihood_over_all_choices(model, tokenizer):
    """Likelihood runs score the gold requests alone; the loss must be the one read off a full choices set."""
    items = _items()
    scorer = Scorer(model, tokenizer)
    for omit in ((), (2,), (1, 4)):
        gold = likelihood_loss(gold_requests("g", items), scorer.score(gold_requests("g", items).requests, omit))
        full = likelihood_loss(choice_requests("c", items), scorer.score(choice_requests("c", items).requests, omit))
        assert gold == pytest.approx(full, abs=1e-5)
    with pytest.raises(ValueError, match="margin loss needs every choice"):
        margin_loss(gold_requests("g", items), scorer.score(gold_requests("g", items).requests))


@pytest.mark.parametrize("loss", ["likelihood", "margin", "perplexity"])
def test_subset_is_the_set_built_from_the_picked_units(loss):
    items = _items()
    picked = [4, 0, 2]
    assert requests_for(loss, "t", items).num_units == len(items)
    assert requests_for(loss, "t", items).subset(picked) == requests_for(loss, "t", [items[i] for i in picked])


def _brute_force(scorer: Scorer, rset, loss_name: str, omit: tuple[int, ...], allowed: list[int]) -> dict[int, float]:
    loss_fn = get_loss(loss_name)
    return {b: loss_fn(rset, scorer.score(rset.requests, omit=(*omit, b))) for b in allowed}


@pytest.mark.parametrize("loss", ["likelihood", "margin", "perplexity"])
def test_greedy_one_step_equals_brute_force(model, tokenizer, loss):
    items = _items()
    rset = requests_for(loss, "t", items)
    scorer = Scorer(model, tokenizer)
    result = greedy_search(FastEvaluator(scorer, rset), get_loss(loss), num_omit=1)
    brute = _brute_force(scorer, rset, loss, (), removable(6, (), 1, 1))
    assert result.omit == (min(brute, key=lambda b: (brute[b], b)),)
    # the shortcuts replay the plain run's operations on the same batches: the numbers are bit-identical
    assert result.trial_losses[0] == brute
    assert result.step_losses == (brute[result.omit[0]],)


@pytest.mark.parametrize("loss", ["likelihood", "margin", "perplexity"])
def test_fast_search_equals_naive_search(model, tokenizer, loss):
    items = _items()
    rset = requests_for(loss, "t", items)
    fast = greedy_search(FastEvaluator(Scorer(model, tokenizer), rset), get_loss(loss), num_omit=2)
    naive = greedy_search(NaiveEvaluator(model, tokenizer, rset), get_loss(loss), num_omit=2)
    assert fast.omit == naive.omit
    assert fast.step_losses == pytest.approx(naive.step_losses, rel=1e-5, abs=1e-5)
    for fast_step, naive_step in zip(fast.trial_losses, naive.trial_losses, strict=True):
        assert fast_step.keys() == naive_step.keys()
        assert list(fast_step.values()) == pytest.approx(list(naive_step.values()), rel=1e-5, abs=1e-5)


def test_later_steps_equal_plain_runs(model, tokenizer):
    """Step 3 starts from hidden states the winning trial of step 2 left behind; they must be the real ones."""
    rset = choice_requests("t", _items())
    scorer = Scorer(model, tokenizer)
    evaluator = FastEvaluator(scorer, rset)
    result = greedy_search(evaluator, margin_loss, num_omit=3, keep_first=0, keep_last=0)
    assert evaluator.capture_passes == 1  # only the dense model needed a separate pass
    for step, losses in enumerate(result.trial_losses):
        omit = result.omit[:step]
        assert losses == _brute_force(scorer, rset, "margin", omit, removable(6, omit, 0, 0))


def test_barriers_are_respected(model, tokenizer):
    rset = choice_requests("t", _items())
    result = greedy_search(FastEvaluator(Scorer(model, tokenizer), rset), margin_loss, 2, keep_first=2, keep_last=2)
    assert set(result.omit) <= {2, 3}
    assert [sorted(step) for step in result.trial_losses] == [[2, 3], [b for b in (2, 3) if b != result.omit[0]]]
    assert removable(6, (3,), 1, 1) == [1, 2, 4]
    with pytest.raises(SearchError, match="num_omit=3"):
        check_barriers(6, 3, 2, 2)
    with pytest.raises(SearchError, match="num_omit"):
        check_barriers(6, 0, 1, 1)


def test_ties_go_to_the_lower_block():
    assert pick({4: 1.0, 2: 1.0, 3: 2.0}) == 2
    assert pick({1: float("nan"), 5: 3.0}) == 5


def test_losses_share_evaluations(model, tokenizer):
    """likelihood after margin on the same request set reuses every evaluation and gives the same result."""
    rset = choice_requests("t", _items())
    scorer = Scorer(model, tokenizer)
    shared = FastEvaluator(scorer, rset)
    greedy_search(shared, get_loss("margin"), 2)
    computed = shared.trials_computed
    together = greedy_search(shared, get_loss("likelihood"), 2)
    alone = greedy_search(FastEvaluator(scorer, rset), get_loss("likelihood"), 2)
    assert together == alone
    assert shared.trials_cached >= 4  # at least the whole first step
    assert shared.trials_computed - computed <= 4


def test_sample_is_seeded_and_sorted():
    assert sample_indices(100, 5, 0, "piqa") == sample_indices(100, 5, 0, "piqa")
    assert sample_indices(100, 5, 0, "piqa") != sample_indices(100, 5, 1, "piqa")
    assert sample_indices(3, 5, 0, "piqa") == [0, 1, 2]
    picked = sample_indices(1000, 64, 0, "boolq")
    assert picked == sorted(picked) and len(set(picked)) == 64


# ------------------------------------------------------------------------------------------- whole search, resume
def _options(tmp_path, name: str, **overrides) -> SearchOptions:
    values = dict(
        tasks=["piqa", "arc_easy"],
        losses=["likelihood", "margin"],
        num_omit=2,
        output=str(tmp_path / name / "candidates.yaml"),
    )
    return SearchOptions(**{**values, **overrides})


def _tiny_base(model, tokenizer):
    from pudding.models.loading import BaseModel

    return BaseModel(model=model, tokenizer=tokenizer, name="tiny")


def _given_items() -> dict[str, list[Item]]:
    return {"piqa": _items("piqa"), "arc_easy": list(reversed(_items("arc_easy")))[:4]}


def test_resume_after_interruption_gives_the_same_file(model, tokenizer, tmp_path, monkeypatch):
    base = _tiny_base(model, tokenizer)
    quiet = lambda text: None  # noqa: E731
    whole = _options(tmp_path, "whole")
    run_search(whole, base=base, items=_given_items(), log=quiet)
    expected = (tmp_path / "whole" / "candidates.yaml").read_bytes()

    calls = []
    real = runs_module.greedy_search

    def interrupted(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    resumed = _options(tmp_path, "resumed")
    monkeypatch.setattr(runs_module, "greedy_search", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_search(resumed, base=base, items=_given_items(), log=quiet)
    assert not (tmp_path / "resumed" / "candidates.yaml").exists()
    assert len([p for p in resumed.run_dir.glob("*.json") if not p.name.endswith(".partial.json")]) == 2

    calls.clear()
    monkeypatch.setattr(runs_module, "greedy_search", lambda *a, **k: calls.append(1) or real(*a, **k))
    lines: list[str] = []
    run_search(resumed, base=base, items=_given_items(), log=lines.append)
    assert len(calls) == 2  # only the two unfinished runs were searched
    assert sum("finished earlier" in line for line in lines) == 2
    assert (tmp_path / "resumed" / "candidates.yaml").read_bytes() == expected

    cset = load_candidates(tmp_path / "resumed" / "candidates.yaml")
    assert cset.num_blocks == 6 and cset.num_omit == 2 and 2 <= len(cset) <= 4
    assert [r["task"] + "/" + r["loss"] for r in cset.search["runs"]] == [
        "piqa/likelihood",
        "piqa/margin",
        "arc_easy/likelihood",
        "arc_easy/margin",
    ]
    for cand in cset.candidates:
        assert len(cand.step_losses) == 2 and 0 not in cand.omit and 5 not in cand.omit


def test_resume_in_the_middle_of_a_run_gives_the_same_file(model, tokenizer, tmp_path, monkeypatch):
    """Stopped during step 2 of the first run: the restart continues that run after step 1."""
    base = _tiny_base(model, tokenizer)
    opts = dict(tasks=["piqa"], losses=["margin", "perplexity"])
    run_search(_options(tmp_path, "whole", **opts), base=base, items=_given_items(), log=lambda text: None)
    expected = (tmp_path / "whole" / "candidates.yaml").read_bytes()

    real = FastEvaluator.trial_losses
    calls = []

    def stop_in_step_two(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    resumed = _options(tmp_path, "resumed", **opts)
    monkeypatch.setattr(FastEvaluator, "trial_losses", stop_in_step_two)
    with pytest.raises(KeyboardInterrupt):
        run_search(resumed, base=base, items=_given_items(), log=lambda text: None)
    monkeypatch.setattr(FastEvaluator, "trial_losses", real)
    assert [p.name.endswith(".partial.json") for p in resumed.run_dir.glob("*.json")] == [True]

    lines: list[str] = []
    run_search(resumed, base=base, items=_given_items(), log=lines.append)
    assert any("piqa/margin] resuming after step 1" in line for line in lines)
    assert not any("step 1/2" in line and "piqa/margin" in line for line in lines)
    assert (tmp_path / "resumed" / "candidates.yaml").read_bytes() == expected
    assert not list(resumed.run_dir.glob("*.partial.json"))


def test_changed_options_do_not_reuse_runs(model, tokenizer, tmp_path):
    base = _tiny_base(model, tokenizer)
    lines: list[str] = []
    run_search(_options(tmp_path, "a"), base=base, items=_given_items(), log=lines.append)
    lines.clear()
    run_search(_options(tmp_path, "a", num_omit=1, overwrite=True), base=base, items=_given_items(), log=lines.append)
    assert not any("finished earlier" in line for line in lines)
    assert load_candidates(tmp_path / "a" / "candidates.yaml").num_omit == 1


def test_too_few_distinct_sets_is_a_clear_error(model, tokenizer, tmp_path):
    opts = _options(tmp_path, "one", tasks=["piqa"], losses=["likelihood"])
    with pytest.raises(CandidateFileError, match="at least 2 candidates.*add tasks or losses"):
        run_search(opts, base=_tiny_base(model, tokenizer), items=_given_items(), log=lambda text: None)


def test_option_errors_name_the_option(tmp_path):
    with pytest.raises(ValueError, match="unknown loss 'entropy'"):
        _options(tmp_path, "x", losses=["entropy"])
    with pytest.raises(ValueError, match="num_samples"):
        _options(tmp_path, "x", num_samples=0)
    with pytest.raises(ValueError, match="unknown task"):
        _options(tmp_path, "x", tasks=["mmlu"])
    with pytest.raises(ValueError, match="corpus"):
        _options(tmp_path, "x", corpus=str(tmp_path / "missing.txt"), losses=["perplexity"])


def test_corpus_perplexity_is_one_task_agnostic_run(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("First paragraph of text.\n\nSecond one here.\n\n\nThird and last paragraph.\n")
    opts = _options(tmp_path, "c", losses=["perplexity", "margin"], corpus=str(corpus))
    specs, _ = runs_module.plan_runs(opts, _given_items())
    assert [s.name for s in specs] == ["piqa/margin", "arc_easy/margin", "corpus/perplexity"]
    assert specs[-1].rset.requests == (
        ("", "First paragraph of text."),
        ("", "Second one here."),
        ("", "Third and last paragraph."),
    )


# --------------------------------------------------------------------------------------------- candidate files
GOOD = {
    "base_model": "default",
    "num_blocks": 30,
    "num_omit": 2,
    "candidates": [
        {"omit": [3, 7], "task": "piqa", "loss": "margin"},
        {"omit": [4, 7], "task": "boolq", "loss": "likelihood"},
    ],
}


def _with(path, **changes):
    data = {**GOOD, **changes}
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"candidates": [{"omit": [3, 7]}]}, "at least 2 candidates"),
        ({"candidates": [{"omit": [3, 7]}, {"omit": [4]}]}, r"candidates\[1\].*omits 1 blocks, but num_omit is 2"),
        ({"candidates": [{"omit": [3, 7]}, {"omit": [4, 30]}]}, r"candidates\[1\].*\[30\] are outside 0..29"),
        ({"candidates": [{"omit": [3, 7]}, {"omit": [4, 4]}]}, "listed more than once"),
        ({"candidates": [{"omit": [3, 7]}, {"omit": [4, True]}]}, r"candidates\[1\].*\[True\] are outside"),
        ({"candidates": [{"omit": [3, 7]}, {"omit": [7, 3]}]}, "repeats the omission set of candidates"),
        ({"candidates": [{"omit": [3, 7]}, {"blocks": [1, 2]}]}, r"candidates\[1\]: missing field 'omit'"),
        ({"num_blocks": "thirty"}, "field 'num_blocks' should be int"),
        ({"candidates": "3,7"}, "field 'candidates' should be list"),
    ],
)
def test_malformed_candidate_files_are_rejected(tmp_path, changes, message):
    path = _with(tmp_path / "bad.yaml", **changes)
    with pytest.raises(CandidateFileError, match=message) as info:
        load_candidates(path)
    assert str(path) in str(info.value)


def test_unreadable_candidate_files_are_rejected(tmp_path):
    with pytest.raises(CandidateFileError, match="does not exist"):
        load_candidates(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("candidates: [1, 2\n")
    with pytest.raises(CandidateFileError, match="not valid YAML"):
        load_candidates(broken)
    assert len(load_candidates(_with(tmp_path / "good.yaml"))) == 2


# ------------------------------------------------------------------------------------------------ command line
def test_command_line_with_config_and_overrides(model, tokenizer, tmp_path, shared_data, capsys):
    """End to end on real data with a tiny saved model: config file, command-line overrides, valid output."""
    from pudding.commands.candidates import main

    model_dir = tmp_path / "tiny-model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    config = tmp_path / "search.yaml"
    config.write_text(
        yaml.safe_dump(
            {"base": str(model_dir), "dtype": "float32", "tasks": ["piqa", "boolq"], "num_omit": 3, "num_samples": 3}
        )
    )
    output = tmp_path / "out" / "cands.yaml"
    main(["--config", str(config), "--data_dir", str(shared_data), "--num_omit", "1", "--output", str(output)])
    cset = load_candidates(output)
    assert cset.num_omit == 1 and cset.base_model == str(model_dir)
    assert cset.search["tasks"] == ["piqa", "boolq"] and cset.search["num_samples"] == 3
    assert cset.search["dtype"] == "float32" and cset.search["dtype_reason"] == "set by the dtype option"
    out = capsys.readouterr().out
    assert "[1/4 piqa/likelihood] step 1/1: removed block" in out
    assert "boolq: no train split" in out  # boolq samples from the router part of validation, and says so
