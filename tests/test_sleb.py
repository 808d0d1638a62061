"""The SLEB baseline: the greedy perplexity search, checked against plain scoring, cached and resumable."""

from __future__ import annotations

import json

import pytest

from pudding.core.scoring import Scorer
from pudding.search.objectives import perplexity_loss, text_requests
from pudding.search.sleb import sleb_search

TEXTS = [
    "The river ran past the old mill and under the stone bridge.",
    "A quick red fox jumped over the sleeping dog in the yard.",
    "Rain fell all night, and by morning the road was a stream.",
    "She counted the coins twice before she paid for the bread.",
]


@pytest.fixture(scope="module")
def scorer(tiny_llama, tokenizer) -> Scorer:
    return Scorer(tiny_llama, tokenizer, batch_tokens=256)


def test_first_step_is_the_block_whose_removal_hurts_perplexity_least(scorer, tmp_path):
    rset = text_requests("t", TEXTS)
    losses = {b: perplexity_loss(rset, scorer.score(rset.requests, omit=(b,))) for b in range(1, 5)}
    result = sleb_search(scorer, TEXTS, 2, "tiny", cache_dir=tmp_path, log=lambda _: None)
    assert result.omit[0] == min(losses, key=losses.get)
    assert result.step_losses[0] == pytest.approx(losses[result.omit[0]], abs=1e-5)
    assert 0 not in result.omit and 5 not in result.omit  # first and last block are kept


def test_cached_and_resumed_equal_uninterrupted(scorer, tmp_path, monkeypatch):
    full = sleb_search(scorer, TEXTS, 3, "tiny", cache_dir=tmp_path / "a", log=lambda _: None)
    # a run killed after one step leaves a one-step file; resuming from it gives the same result
    (path,) = (tmp_path / "a").glob("sleb-*.json")
    saved = json.loads(path.read_text())
    partial = dict(saved, omit=saved["omit"][:1], step_losses=saved["step_losses"][:1])
    partial["trial_losses"] = saved["trial_losses"][:1]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / path.name).write_text(json.dumps(partial))
    lines: list[str] = []
    resumed = sleb_search(scorer, TEXTS, 3, "tiny", cache_dir=tmp_path / "b", log=lines.append)
    assert resumed.omit == full.omit and resumed.step_losses == pytest.approx(full.step_losses)
    assert any("resuming after step 1" in line for line in lines)
    # a finished one is read back without scoring anything
    monkeypatch.setattr(Scorer, "run", lambda *a, **k: pytest.fail("scored although cached"))
    again = sleb_search(scorer, TEXTS, 3, "tiny", cache_dir=tmp_path / "a", log=lambda _: None)
    assert again.omit == full.omit
    # another model key is another cache entry
    monkeypatch.undo()
    other = sleb_search(scorer, TEXTS, 3, "other", cache_dir=tmp_path / "a", log=lambda _: None)
    assert other.omit == full.omit and len(list((tmp_path / "a").glob("sleb-*.json"))) == 2
