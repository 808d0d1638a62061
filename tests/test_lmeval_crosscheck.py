"""The issue's cross-check: pudding's dense accuracy on PIQA equals lm-eval's own, on the same 100 items.

Independent by construction: lm-eval runs its installed ``piqa`` YAML (only the data source is swapped for a JSONL
file written here from ``valid.jsonl`` + ``valid-labels.lst``) with its own ``HFLM`` wrapped around the very model
object pudding scores with. Equal accuracy on the same items means identical per-item decisions, so besides acc the
test checks the prompts lm-eval built and every per-request log-likelihood: a near-tie flipping would show up there
as a real numerical difference instead of being hidden by a looser accuracy tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from support import lmeval_bridge

from pudding.core.outcomes import evaluate_items
from pudding.core.tasks import load_split

pytestmark = pytest.mark.slow

N_ITEMS = 100
HFLM_BATCH_SIZE = 16
LOGLIKELIHOOD_ATOL = 1e-4
# pudding and HFLM batch the same tokens into differently shaped float32 matmuls, so each token's log-probability
# differs by rounding: up to ~2e-5 nats per token on an AVX2 CPU (AMD EPYC; 111 tokens: 1.8e-3), less with AVX512.
# The allowance grows with the continuation's length and stays ~100,000x below a real difference (a wrong token or
# position costs nats).
LOGLIKELIHOOD_PER_TOKEN = 4e-5


@pytest.fixture(scope="module")
def crosscheck(default_base, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both evaluations of the first 100 PIQA validation items, run once for all assertions below."""
    from lm_eval.models.huggingface import HFLM

    records = lmeval_bridge.piqa_records(shared_data)[:N_ITEMS]
    out_dir = tmp_path_factory.mktemp("lmeval_piqa")
    lmeval_bridge.write_local_task("piqa", records, out_dir)
    hflm = HFLM(pretrained=default_base.model, tokenizer=default_base.tokenizer, batch_size=HFLM_BATCH_SIZE)
    theirs = lmeval_bridge.run_lmeval(hflm, ["piqa"], lmeval_bridge.task_manager(out_dir))

    items = load_split("piqa", "validation", str(shared_data))[:N_ITEMS]
    scorer = lmeval_bridge.RecordingScorer(default_base.model, default_base.tokenizer)
    ours = evaluate_items(scorer, items)
    return {"items": items, "theirs": theirs, "ours": ours, "our_scores": scorer.last_scores}


def test_lmeval_built_the_same_requests(crosscheck: dict[str, Any]) -> None:
    """lm-eval's prompts and continuations for these documents are exactly pudding's requests, in the same order."""
    assert lmeval_bridge.check_same_requests(crosscheck["theirs"], "piqa", crosscheck["items"]) == []


def test_acc_equals_lmeval_hflm(crosscheck: dict[str, Any]) -> None:
    """The issue's criterion: same 100 items, same model, identical acc (and acc_norm) as lm-eval's HFLM."""
    theirs = lmeval_bridge.task_result(crosscheck["theirs"], "piqa")
    ours = crosscheck["ours"]
    assert ours["n"] == theirs["n"] == N_ITEMS
    assert ours["acc"] == theirs["acc"]
    assert ours["acc_norm"] == theirs["acc_norm"]


def test_request_loglikelihoods_match_hflm(crosscheck: dict[str, Any]) -> None:
    """Every choice's summed log-likelihood agrees with HFLM's to float32 rounding: 1e-4 + 4e-5 per token."""
    theirs: Sequence[Sequence[float]] = lmeval_bridge.request_loglikelihoods(crosscheck["theirs"], "piqa")
    flat_theirs = [ll for doc in theirs for ll in doc]
    flat_ours = [s.logprob for s in crosscheck["our_scores"]]
    assert len(flat_ours) == len(flat_theirs) == 2 * N_ITEMS
    for i, (mine, hflm) in enumerate(zip(flat_ours, flat_theirs, strict=True)):
        allowed = LOGLIKELIHOOD_ATOL + LOGLIKELIHOOD_PER_TOKEN * crosscheck["our_scores"][i].num_tokens
        assert mine == pytest.approx(hflm, abs=allowed, rel=0), f"request {i} (item {i // 2}, choice {i % 2}) differs"
