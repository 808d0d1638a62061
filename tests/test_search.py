"""Candidate search: greedy result equals brute force and the naive search, barriers, memo, resume, file errors,
candidates at several depths from one search."""

from __future__ import annotations

import shutil

import pytest
import yaml
from conftest import interrupted_after

from pudding.core.candidates import Candidate, CandidateFileError, CandidateSet, load_candidates
from pudding.core.errors import OptionError
from pudding.core.scoring import Scorer
from pudding.core.tasks import Item
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
    from pudding.core.models.loading import BaseModel

    return BaseModel(model=model, tokenizer=tokenizer, name="tiny")


def _given_items() -> dict[str, list[Item]]:
    return {"piqa": _items("piqa"), "arc_easy": list(reversed(_items("arc_easy")))[:4]}


def test_resume_after_interruption_gives_the_same_file(model, tokenizer, tmp_path, monkeypatch):
    base = _tiny_base(model, tokenizer)
    quiet = lambda text: None  # noqa: E731
    whole = _options(tmp_path, "whole")
    run_search(whole, base=base, items=_given_items(), log=quiet)
    expected = (tmp_path / "whole" / "candidates.yaml").read_bytes()

    real = runs_module.greedy_search
    resumed = _options(tmp_path, "resumed")
    monkeypatch.setattr(runs_module, "greedy_search", interrupted_after(real, calls=2))
    with pytest.raises(KeyboardInterrupt):
        run_search(resumed, base=base, items=_given_items(), log=quiet)
    assert not (tmp_path / "resumed" / "candidates.yaml").exists()
    assert len([p for p in resumed.run_dir.glob("*.json") if not p.name.endswith(".partial.json")]) == 2

    calls = []
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


# ------------------------------------------------------------------------------------------------ several depths
def _search(tmp_path, name: str, base, **overrides) -> tuple[CandidateSet, bytes]:
    """A whole search on the tiny model, barriers 0/0 and these losses: runs differ at depth 2 and 4, and some merge."""
    opts = _options(tmp_path, name, keep_first=0, keep_last=0, losses=["likelihood", "perplexity"], **overrides)
    cset = run_search(opts, base=base, items=_given_items(), log=lambda text: None)
    return cset, (tmp_path / name / "candidates.yaml").read_bytes()


def test_depth_prefixes_equal_separate_searches(model, tokenizer, tmp_path, monkeypatch):
    """[2, 4] from one search to 4 = the searches to 2 and to 4 done apart: same sets, losses, merges, order."""
    base = _tiny_base(model, tokenizer)
    two, _ = _search(tmp_path, "two", base, num_omit=2)
    four, _ = _search(tmp_path, "four", base, num_omit=4)
    both, written = _search(tmp_path, "both", base, num_omit=[4, 2])

    assert both.depths == (2, 4) and both.num_omit == 4 and two.depths == (2,) and four.depths == (4,)
    assert both.at_depth(2) == list(two.candidates)  # omit in removal order, step losses, task, loss, also_from
    assert both.at_depth(4) == list(four.candidates)
    assert list(both.candidates) == [*two.candidates, *four.candidates]  # depth order, then run order
    assert both.search["runs"] == four.search["runs"]  # the runs went to the deepest depth only
    for cand in both.at_depth(2):
        run = next(r for r in four.search["runs"] if f"{r['task']}/{r['loss']}" == cand.run)
        assert list(cand.omit) == run["omit"][:2] and list(cand.step_losses) == run["step_losses"][:2]
    assert [c.name for c in two.candidates] == [c.run for c in two.candidates]  # task/loss, as before
    assert [c.name for c in both.candidates] == [f"{c.run}@{c.depth}" for c in both.candidates]
    assert len({c.name for c in both.candidates}) == len(both)
    assert len(two) + len(four) == len(both) > len(four)  # the 2-block sets differ from each other, too
    assert any(c.also_from for c in both.at_depth(2)) and any(c.also_from for c in both.at_depth(4))  # merged

    loaded = load_candidates(tmp_path / "both" / "candidates.yaml")
    assert loaded == both and [c.name for c in loaded.candidates] == [c.name for c in both.candidates]
    assert yaml.safe_load(written)["num_omit"] == [2, 4]

    # the same list over the finished runs of the 4-block search: no scoring at all, the same file
    def no_scoring(*args, **kwargs):
        raise AssertionError("scored a finished run")

    monkeypatch.setattr(Scorer, "run", no_scoring)
    monkeypatch.setattr(Scorer, "score", no_scoring)
    lines: list[str] = []
    work = str(tmp_path / "four" / "candidates.yaml.runs")
    reused = _options(
        tmp_path,
        "reused",
        keep_first=0,
        keep_last=0,
        losses=["likelihood", "perplexity"],
        num_omit=[2, 4],
        work_dir=work,
    )
    run_search(reused, base=base, items=_given_items(), log=lines.append)
    assert sum("finished earlier" in line for line in lines) == 4
    assert (tmp_path / "reused" / "candidates.yaml").read_bytes() == written


def test_depths_from_a_files_recorded_runs_equal_the_search(model, tokenizer, tmp_path, monkeypatch):
    """``from_runs``: the [2, 4] candidates derived from the 4-block file alone (no run files, no model) are the
    multi-depth search's, merges included; a depth beyond the recorded runs is a one-line error."""
    base = _tiny_base(model, tokenizer)
    four, _ = _search(tmp_path, "four", base, num_omit=4)
    both, _ = _search(tmp_path, "both", base, num_omit=[2, 4])
    source = tmp_path / "four" / "candidates.yaml"
    shutil.rmtree(tmp_path / "four" / "candidates.yaml.runs")

    def no_model(*args, **kwargs):
        raise AssertionError("loaded or ran a model")

    monkeypatch.setattr(Scorer, "run", no_model)
    monkeypatch.setattr("pudding.search.runs.load_base", no_model)
    out = tmp_path / "derived.yaml"
    opts = _options(tmp_path, "x", num_omit=[4, 2], from_runs=str(source), output=str(out))
    derived = run_search(opts, log=lambda text: None)
    assert list(derived.candidates) == list(both.candidates) and derived.depths == (2, 4)
    assert any(c.also_from for c in derived.at_depth(2))  # merges happen at the derived depth too
    assert load_candidates(out) == derived
    assert derived.search["derived_from"]["file"] == str(source) and derived.search["runs"] == four.search["runs"]
    with pytest.raises(CandidateFileError, match=r"search.runs\[0\] .* removed 4 blocks, fewer than depth 5"):
        run_search(_options(tmp_path, "y", num_omit=[2, 5], from_runs=str(source)), log=lambda text: None)
    with pytest.raises(OptionError, match="option from_runs: .* is not a file"):
        _options(tmp_path, "z", from_runs=str(tmp_path / "missing.yaml")).check()


def test_one_depth_output_is_unchanged(model, tokenizer, tmp_path):
    """An int num_omit writes today's format; [k] and "k" are the same search, the same run files, the same bytes."""
    base = _tiny_base(model, tokenizer)
    cset, written = _search(tmp_path, "int", base, num_omit=3)
    raw = yaml.safe_load(written)
    assert list(raw) == ["base_model", "num_blocks", "num_omit", "search", "candidates"]
    assert raw["num_omit"] == 3 and cset.depths == (3,) and not cset.multi_depth
    for entry, cand in zip(raw["candidates"], cset.candidates, strict=True):
        assert list(entry) == ["omit", "task", "loss", "step_losses", "also_from"]
        assert len(entry["omit"]) == 3 and cand.name == f"{entry['task']}/{entry['loss']}"
    work = str(tmp_path / "int" / "candidates.yaml.runs")
    for name, value in (("list", [3]), ("text", "[3]")):
        lines: list[str] = []
        opts = _options(
            tmp_path,
            name,
            keep_first=0,
            keep_last=0,
            losses=["likelihood", "perplexity"],
            num_omit=value,
            work_dir=work,
        )
        run_search(opts, base=base, items=_given_items(), log=lines.append)
        assert sum("finished earlier" in line for line in lines) == 4
        assert (tmp_path / name / "candidates.yaml").read_bytes() == written


def test_several_depths_share_the_key_of_the_deepest(tmp_path):
    """So run files made with num_omit 7 (the release's) serve [3, 5, 7] as they are."""
    items = _given_items()
    specs, _ = runs_module.plan_runs(_options(tmp_path, "x", num_omit=7), items)
    for depths in ([3, 5, 7], [7, 3], "3,5,7", [7]):
        opts = _options(tmp_path, "x", num_omit=depths)
        assert [runs_module.run_key(opts, s, 30, "float32") for s in specs] == [
            runs_module.run_key(_options(tmp_path, "x", num_omit=7), s, 30, "float32") for s in specs
        ]
    assert runs_module.run_key(_options(tmp_path, "x", num_omit=[3, 5]), specs[0], 30, "float32") != (
        runs_module.run_key(_options(tmp_path, "x", num_omit=7), specs[0], 30, "float32")
    )
    assert _options(tmp_path, "x", num_omit="[7, 3, 5]").num_omit == [3, 5, 7]
    assert _options(tmp_path, "x", num_omit=[5]).num_omit == 5


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "an empty list"),
        ("[]", "an empty list"),
        ([3, "x"], "'x' is not valid"),
        ("[3, x]", "'x' is not valid"),
        ([3, 2.5], "2.5 is not valid"),
        ([3, True], "True is not valid"),
        ([3, 5, 3], r"depths must be distinct, got \[3, 5, 3\]"),
        ([0, 3], "must be at least 1, got 0"),
        (2.0, "should be an int or a list of ints"),
    ],
)
def test_bad_depth_lists_are_one_line_errors(tmp_path, value, message):
    with pytest.raises(OptionError, match=message) as info:
        _options(tmp_path, "x", num_omit=value)
    assert str(info.value).startswith("option num_omit: ") and "\n" not in str(info.value)


def test_a_depth_beyond_the_free_blocks_is_refused_before_any_search(model, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(runs_module, "greedy_search", lambda *a, **k: pytest.fail("searched"))
    opts = _options(tmp_path, "deep", num_omit=[2, 5])  # 6 blocks, keep 1 + 1: four removable
    with pytest.raises(SearchError, match=r"option num_omit=5: .* leaving 4 removable") as info:
        run_search(opts, base=_tiny_base(model, tokenizer), items=_given_items(), log=lambda text: None)
    assert "\n" not in str(info.value)
    assert not opts.run_dir.exists()


def test_sleb_sets_at_each_depth_come_from_one_search(model, tokenizer):
    from pudding.search.sleb import sleb_prefix, sleb_search, sleb_sets

    scorer = Scorer(model, tokenizer)
    texts = ["Bees make honey in the summer.", "The capital of France is Paris.", "Cats sleep a lot."]
    quiet = lambda text: None  # noqa: E731
    deep = sleb_search(scorer, texts, 3, "tiny", log=quiet)
    for depth in (1, 2):
        alone = sleb_search(scorer, texts, depth, "tiny", log=quiet)
        assert deep.prefix(depth) == alone  # blocks, step losses, dense loss and every trial's loss
        assert sleb_prefix(deep, depth) == tuple(sorted(alone.omit))
    assert sleb_sets(deep, [3, 1]) == {1: tuple(deep.omit[:1]), 3: tuple(sorted(deep.omit))}
    with pytest.raises(SearchError, match="depth 4: the search removed 3 blocks"):
        sleb_prefix(deep, 4)


def test_sleb_joins_the_candidates_when_asked_from_compare_s_cached_search(model, tokenizer, tmp_path, monkeypatch):
    """sleb: true adds SLEB's set at each depth as sleb/perplexity after the task candidates (which stay as they were),
    found by pudding compare's search on the same texts, model key and cache; a cached search is read, not rerun."""
    from pudding.core.outcomes import model_key
    from pudding.search import sleb as sleb_module
    from pudding.search.objectives import corpus_texts

    base = _tiny_base(model, tokenizer)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Bees make honey in the summer.\n\nThe capital of France is Paris.\n\nCats sleep a lot.\n")
    common = dict(num_omit=[1, 3], corpus=str(corpus), outcomes_dir=str(tmp_path / "outcomes"))
    without = _options(tmp_path, "plain", num_omit=[1, 3], outcomes_dir=str(tmp_path / "outcomes"))
    plain = run_search(without, base=base, items=_given_items(), log=lambda _: None)
    assert "sleb" not in plain.search and all(c.task != "sleb" for c in plain.candidates)
    assert not (tmp_path / "outcomes").exists()  # no SLEB search without the option

    opts = _options(tmp_path, "sleb", sleb=True, **common)
    cset = run_search(opts, base=base, items=_given_items(), log=lambda _: None)
    # compare's search, run here on its own (no cache): the texts it pools and the key it gives
    scorer = Scorer(model, tokenizer, batch_tokens=opts.batch_tokens)
    texts = corpus_texts(str(corpus), opts.sleb_samples * len(opts.tasks), 0)
    key = model_key("tiny", "float32", "cpu")
    expected = sleb_module.sleb_search(scorer, texts, 3, key, log=lambda _: None)
    for depth in (1, 3):
        sleb_set = frozenset(expected.omit[:depth])
        (found,) = [c for c in cset.at_depth(depth) if frozenset(c.omit) == sleb_set]
        assert "sleb/perplexity" in (found.run, *found.also_from)
        task_sets = [frozenset(c.omit) for c in plain.at_depth(depth)]
        assert [frozenset(c.omit) for c in cset.at_depth(depth)][: len(task_sets)] == task_sets  # appended last
    assert len(cset) > len(plain)  # on this model SLEB found a set no task run found
    assert cset.search["runs"][-1]["task"] == "sleb" and cset.search["sleb"]["sleb_samples"] == 16
    assert len(list((tmp_path / "outcomes" / "sleb").glob("sleb-*.json"))) == 1  # where compare keeps it

    monkeypatch.setattr(sleb_module, "greedy_search", lambda *a, **k: pytest.fail("searched although cached"))
    lines: list[str] = []
    again = run_search(
        _options(tmp_path, "again", sleb=True, **common), base=base, items=_given_items(), log=lines.append
    )
    assert again.candidates == cset.candidates and any("SLEB set found earlier" in line for line in lines)
    # --from_runs with sleb on the file made without it: the same candidates, SLEB looked up in the cache (a model is
    # loaded for that, here the tiny one given); on the file made with it, SLEB's recorded run is carried along
    added = _options(tmp_path, "added", sleb=True, from_runs=without.output, **common)
    assert run_search(added, base=base, log=lambda _: None).candidates == cset.candidates
    carried = _options(tmp_path, "carried", num_omit=[1, 3], from_runs=opts.output)
    assert run_search(carried, log=lambda _: None).candidates == cset.candidates
    with pytest.raises(OptionError, match="option sleb_samples"):
        _options(tmp_path, "bad", sleb=True, sleb_samples=0)


def test_bundle_rebuilds_a_file_of_several_depths():
    from pudding.router.bundle import candidate_set_from_meta

    cset = CandidateSet(
        "tiny",
        6,
        3,
        (
            Candidate((1, 2), "piqa", "margin"),
            Candidate((2, 4), "boolq", "likelihood"),
            Candidate((1, 2, 3), "piqa", "margin"),
        ),
    )
    names = [c.name for c in cset.candidates]
    assert names == ["piqa/margin@2", "boolq/likelihood@2", "piqa/margin@3"]
    meta = {"base_model": "tiny", "num_blocks": 6, "omission_sets": cset.omission_sets, "candidate_names": names}
    rebuilt = candidate_set_from_meta(meta)
    assert [c.name for c in rebuilt.candidates] == names and rebuilt.depths == (2, 3) and rebuilt.num_omit == 3


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
        # several depths
        ({"num_omit": [2, 3]}, "field 'num_omit' lists depth 3, but no candidate omits 3"),
        (
            {"num_omit": [2, 3], "candidates": [{"omit": [3, 7]}, {"omit": [1, 2, 3]}, {"omit": [4]}]},
            r"candidates\[2\].*omits 1 blocks, but num_omit is \[2, 3\]",
        ),
        ({"num_omit": []}, "field 'num_omit' is an empty list"),
        ({"num_omit": [2, 2]}, "field 'num_omit' lists a depth more than once"),
        ({"num_omit": [2, "3"]}, "field 'num_omit' should hold positive ints, got '3'"),
        ({"num_omit": "2"}, "field 'num_omit' should be an int or a list of ints"),
        (
            {
                "num_omit": [2, 3],
                "candidates": [*GOOD["candidates"], {"omit": [3, 4, 7], "task": "piqa", "loss": "margin"}]
                + [{"omit": [3, 5], "task": "piqa", "loss": "margin"}],
            },
            r"candidates\[3\] has the name 'piqa/margin@2' of candidates\[0\]",
        ),
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


def test_a_file_of_several_depths_loads_with_depth_names(tmp_path):
    deeper = {"omit": [3, 4, 7], "task": "piqa", "loss": "margin", "also_from": ["boolq/margin"]}
    cset = load_candidates(_with(tmp_path / "multi.yaml", num_omit=[3, 2], candidates=[*GOOD["candidates"], deeper]))
    assert cset.depths == (2, 3) and cset.num_omit == 3 and cset.multi_depth
    assert [c.depth for c in cset.candidates] == [2, 2, 3]
    assert [c.name for c in cset.at_depth(2)] == ["piqa/margin@2", "boolq/likelihood@2"]
    assert cset.at_depth(3)[0].also_from == ("boolq/margin",)
    cset.save(tmp_path / "again.yaml")  # written back as it was read: the depths, not the largest
    assert yaml.safe_load((tmp_path / "again.yaml").read_text())["num_omit"] == [2, 3]
    assert load_candidates(tmp_path / "again.yaml") == cset

    single = load_candidates(_with(tmp_path / "one.yaml", num_omit=[2]))  # one depth, as a list: a one-depth file
    assert single.depths == (2,) and [c.name for c in single.candidates] == ["piqa/margin", "boolq/likelihood"]


# ------------------------------------------------------------------------------------------------ command line
def test_command_line_with_config_and_overrides(model, tokenizer, tmp_path, shared_data, capsys):
    """End to end on real data with a tiny saved model: config file, command-line overrides, valid output."""
    from pudding.cli.candidates import main

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
