"""Per-item outcomes of many omission sets: equal to scoring each set on its own, cached, resumable, routable."""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import interrupted_after

from pudding.core import outcomes as outcomes_module
from pudding.core.accuracy import judge, split_scores
from pudding.core.outcomes import Outcomes, compute_outcomes, evaluate_sets, set_key
from pudding.core.scoring import Scorer
from pudding.core.tasks import Item

WORDS = ["the", "a", "cat", "dog", "sun", "rain", "tree", "river", "stone", "light", "quick", "slow", "red", "blue"]
SETS = [(), (1, 4), (2, 3), (1, 2), (3, 4)]


def make_items(n: int = 11, seed: int = 0) -> list[Item]:
    rng = random.Random(seed)
    items = []
    for i in range(n):
        context = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + ":"
        choices = tuple(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) for _ in range(3))
        requests = tuple((context, " " + c) for c in choices)
        items.append(Item("toy", f"t{i}", requests, choices, rng.randrange(3), context))
    return items


@pytest.fixture(scope="module")
def scorer(tiny_llama, tokenizer) -> Scorer:
    return Scorer(tiny_llama, tokenizer, batch_tokens=256)


def direct(scorer: Scorer, items: list[Item], omit) -> list:
    """Plain scoring of one set, no prefix sharing, no chunks: the reference."""
    scores = scorer.score([r for item in items for r in item.requests], omit)
    return judge(items, split_scores(items, scores))


def test_outcomes_equal_scoring_each_set_on_its_own(scorer):
    items = make_items()
    out = compute_outcomes(scorer, items, SETS, chunk_items=4)
    assert out.item_ids == [i.item_id for i in items] and list(out.gold) == [i.gold for i in items]
    for omit in SETS:
        ref = direct(scorer, items, omit)
        assert list(out.pred[set_key(omit)]) == [r.pred for r in ref]
        assert list(out.pred_norm[set_key(omit)]) == [r.pred_norm for r in ref]
    # the sets do not all agree, or this test could not tell them apart
    assert len({tuple(out.pred[set_key(s)]) for s in SETS}) > 1


def test_evaluate_sets_summaries(scorer):
    items = make_items()
    summaries = evaluate_sets(scorer, items, SETS[:2])
    for omit, summary in zip(SETS[:2], summaries, strict=True):
        ref = direct(scorer, items, omit)
        assert summary["n"] == len(items)
        assert summary["acc"] == pytest.approx(np.mean([r.pred == r.gold for r in ref]))
        assert summary["acc_norm"] == pytest.approx(np.mean([r.pred_norm == r.gold for r in ref]))


def test_routed_lookup_equals_scoring_each_item_with_its_set(scorer):
    items = make_items()
    out = compute_outcomes(scorer, items, SETS)
    rng = random.Random(1)
    choices = [set_key(rng.choice(SETS)) for _ in items]
    routed = out.routed(choices)
    for i, item in enumerate(items):
        omit = [int(b) for b in choices[i].split(",") if b]
        (ref,) = direct(scorer, [item], omit)
        assert routed[i] == (ref.pred == ref.gold)
    with pytest.raises(ValueError, match="routing choices"):
        out.routed(choices[:-1])


def test_cache_resumes_and_scores_only_what_is_missing(scorer, tmp_path, monkeypatch):
    items = make_items()
    whole = compute_outcomes(scorer, items, SETS, model_key="m", cache_dir=tmp_path / "a", chunk_items=4)

    real = outcomes_module.run_paths
    monkeypatch.setattr(outcomes_module, "run_paths", interrupted_after(real, calls=2))  # killed after two chunks
    with pytest.raises(KeyboardInterrupt):
        compute_outcomes(scorer, items, SETS, model_key="m", cache_dir=tmp_path / "b", chunk_items=4)
    assert len(list((tmp_path / "b").rglob("chunk-*.json"))) == 2 and not list((tmp_path / "b").rglob("*.tmp"))

    ran: list[list] = []
    monkeypatch.setattr(outcomes_module, "run_paths", lambda s, p, paths, r: ran.append(paths) or real(s, p, paths, r))
    resumed = compute_outcomes(scorer, items, SETS, model_key="m", cache_dir=tmp_path / "b", chunk_items=4)
    assert len(ran) == 1  # only the third chunk was scored
    for key in whole.pred:
        assert np.array_equal(resumed.pred[key], whole.pred[key])
        assert np.array_equal(resumed.pred_norm[key], whole.pred_norm[key])

    ran.clear()
    compute_outcomes(scorer, items, [*SETS, (2, 4)], model_key="m", cache_dir=tmp_path / "b", chunk_items=4)
    assert len(ran) == 3 and all(len(paths) == 1 for paths in ran)  # the new set alone, on each chunk
    ran.clear()
    compute_outcomes(scorer, items, SETS, model_key="other model", cache_dir=tmp_path / "b", chunk_items=4)
    assert len(ran) == 3 and all(len(paths) == len(SETS) for paths in ran)  # another key shares nothing


def test_empty_and_bad_arguments(scorer):
    out = compute_outcomes(scorer, [], SETS)
    assert isinstance(out, Outcomes) and out.item_ids == []
    with pytest.raises(ValueError, match="chunk_items"):
        compute_outcomes(scorer, make_items(2), SETS, chunk_items=0)
