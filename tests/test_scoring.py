"""The scoring engine: equal to direct per-request scoring, batched or not, packed or not, on every family."""

from __future__ import annotations

import pytest
import torch
from conftest import on_device, tiny_model
from test_omission import FAMILIES

from pudding.core.models.adapters import adapter_for
from pudding.core.models.omission import kept_blocks, omit_blocks
from pudding.core.scoring import Scorer

REQUESTS = [
    ("Question: What is the capital of France?\nAnswer:", " Paris"),
    ("Question: What is the capital of France?\nAnswer:", " London, which is a large city"),
    ("Question: What is the capital of France?\nAnswer:", " Berlin"),
    ("The cat sat on the", " mat."),
    ("A much longer context that goes on for a while so that rows differ in length, and then", " it ends here"),
    ("Trailing space moves ", "into the continuation"),
    ("", "An empty context is scored after the BOS/EOS prefix"),
    ("Sarah was a much better surgeon than Maria so Sarah", " always got the harder cases."),
    ("Sarah was a much better surgeon than Maria so Maria", " always got the harder cases."),
]


def direct_scores(model, scorer, requests, omit=()):
    """Reference: one request per forward pass, full logits, no packing, no batching (on the model's device)."""
    out = []
    device = next(model.parameters()).device
    with torch.no_grad(), omit_blocks(model, omit):
        for context, continuation in requests:
            ctx, cont = scorer.encode_pair(context, continuation)
            logits = model(torch.tensor([ctx + cont[:-1]], device=device)).logits[0].float()
            logprobs = torch.log_softmax(logits[len(ctx) - 1 :], dim=-1)
            target = torch.tensor(cont, device=device)
            picked = logprobs[torch.arange(len(cont), device=device), target]
            greedy = bool((logits[len(ctx) - 1 :].argmax(-1) == target).all())
            out.append((float(picked.sum()), len(cont), greedy))
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_engine_equals_direct_scoring(family, tokenizer, device):
    model = on_device(tiny_model(family, len(tokenizer)), device)
    for omit in [(), (1, 4)]:
        reference = direct_scores(model, Scorer(model, tokenizer), REQUESTS, omit)
        for share_context in (True, False):
            for batch_tokens in (1, 64, 4096):
                scorer = Scorer(model, tokenizer, batch_tokens=batch_tokens, share_context=share_context)
                got = scorer.score(REQUESTS, omit)
                for s, (logprob, n, greedy) in zip(got, reference, strict=True):
                    assert s.logprob == pytest.approx(logprob, abs=1e-4), (family, omit, share_context, batch_tokens)
                    assert (s.num_tokens, s.is_greedy) == (n, greedy)


def test_every_family_packs_contexts(tokenizer):
    """The 4-D-mask packing path is the one exercised above for every family (no silent fallback)."""
    for family in FAMILIES:
        model = tiny_model(family, len(tokenizer))
        assert adapter_for(model).packing and Scorer(model, tokenizer).packing


def test_shared_context_is_packed_once(tiny_llama, tokenizer):
    scorer = Scorer(tiny_llama, tokenizer)
    prepared = scorer.prepare(REQUESTS[:3])
    (batch,) = prepared.batches
    ctx, _ = scorer.encode_pair(*REQUESTS[0])
    assert batch.input_ids.shape[0] == 1, "three choices sharing a context form one row"
    conts = [scorer.encode_pair(*r)[1] for r in REQUESTS[:3]]
    assert batch.input_ids.shape[1] == len(ctx) + sum(len(c) - 1 for c in conts)
    unpacked = Scorer(tiny_llama, tokenizer, share_context=False).prepare(REQUESTS[:3])
    assert sum(b.input_ids.shape[0] for b in unpacked.batches) == 3


def test_plain_texts_after_bos_get_rows_of_their_own_beyond_the_budget(tiny_llama_on, tokenizer):
    tiny_llama = tiny_llama_on
    texts = [("", f"Plain text number {i} goes on for a few more words.") for i in range(12)]
    scorer = Scorer(tiny_llama, tokenizer, batch_tokens=64)
    prepared = scorer.prepare(texts)
    assert sum(b.input_ids.shape[0] for b in prepared.batches) == 12
    assert max(b.input_ids.shape[1] for b in prepared.batches) <= 64  # not one ~150-token row after BOS
    reference = Scorer(tiny_llama, tokenizer, share_context=False).score(texts)
    for got, ref in zip(scorer.score(texts), reference, strict=True):
        assert got.logprob == pytest.approx(ref.logprob, abs=1e-4)
    # within the budget they still share the BOS row, and a long question with short answers stays one row even
    # beyond it: the packing of multiple-choice items, and so their numbers, do not change
    (within,) = Scorer(tiny_llama, tokenizer, batch_tokens=4096).prepare(texts).batches
    assert within.input_ids.shape[0] == 1
    choices = [("Question: " + "very " * 40 + "long?\nAnswer:", answer) for answer in (" yes", " no")]
    (packed,) = Scorer(tiny_llama, tokenizer, batch_tokens=16).prepare(choices).batches
    assert packed.input_ids.shape[0] == 1


def test_lm_eval_tokenisation(tokenizer, tiny_llama):
    scorer = Scorer(tiny_llama, tokenizer)
    ctx, cont = scorer.encode_pair("Answer: ", "yes")
    assert ctx == tokenizer.encode("Answer:")
    assert cont == tokenizer.encode("Answer: yes")[len(ctx) :]
    ctx, cont = scorer.encode_pair("", "hello")
    assert ctx == [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
    assert cont == tokenizer.encode("hello")


def test_batches_are_length_sorted_and_not_mostly_padding(tiny_llama, tokenizer):
    scorer = Scorer(tiny_llama, tokenizer, batch_tokens=10_000)
    prepared = scorer.prepare(REQUESTS)
    widths = [b.input_ids.shape[1] for b in prepared.batches]
    assert widths == sorted(widths, reverse=True) and len(widths) > 1
    for batch in prepared.batches:
        real = (batch.position_ids > 0).sum(1) + 1
        assert real.min() >= 0.9 * batch.input_ids.shape[1]


def test_truncation_cuts_context_from_the_left(tiny_llama, tokenizer):
    long_context = " ".join(f"word{i}" for i in range(200))
    scorer = Scorer(tiny_llama, tokenizer, max_length=32)
    prepared = scorer.prepare([(long_context, " end of it")])
    (batch,) = prepared.batches
    _, cont = scorer.encode_pair(long_context, " end of it")
    assert batch.input_ids.shape[1] == 32  # (ctx + cont)[-33:][:-1]
    full_ctx, _ = scorer.encode_pair(long_context, " end of it")
    assert batch.input_ids[0, : 33 - len(cont)].tolist() == full_ctx[-(33 - len(cont)) :]


def test_hidden_state_capture_and_restart(tiny_llama_on, tokenizer):
    """Starting from recorded block inputs equals running the reduced model from scratch (the search's shortcut)."""
    tiny_llama = tiny_llama_on
    scorer = Scorer(tiny_llama, tokenizer, batch_tokens=128)
    prepared = scorer.prepare(REQUESTS)
    assert len(prepared.batches) > 1
    dense, captured = scorer.run(prepared, capture=range(6))
    assert set(captured) == set(range(6)) and all(len(v) == len(prepared.batches) for v in captured.values())
    for b in (1, 3, 4):
        rest = [k for k in kept_blocks([b], 6) if k > b]
        shortcut, again = scorer.run(prepared, rest, start_hidden=captured[b], capture=rest[:1])
        assert all(torch.equal(x, y) for x, y in zip(again[rest[0]], captured[b], strict=True)), "records the injected"
        full, _ = scorer.run(prepared, kept_blocks([b], 6))
        assert [s.logprob for s in shortcut] == pytest.approx([s.logprob for s in full], abs=1e-6)
        assert [s.logprob for s in full] != pytest.approx([s.logprob for s in dense], abs=1e-3)


@pytest.mark.slow
def test_default_model_batched_equals_unbatched(default_base):
    model, tok = default_base.model, default_base.tokenizer
    batched = Scorer(model, tok, batch_tokens=4096).score(REQUESTS, omit=(5, 9, 13))
    single = Scorer(model, tok, batch_tokens=1, share_context=False).score(REQUESTS, omit=(5, 9, 13))
    for a, b in zip(batched, single, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert (a.num_tokens, a.is_greedy) == (b.num_tokens, b.is_greedy)


@pytest.mark.slow
def test_default_model_greedy_flag(default_base):
    model, tok = default_base.model, default_base.tokenizer
    context = "The capital of France is"
    ids = torch.tensor([tok.encode(context)])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=3, do_sample=False)
    greedy_text = tok.decode(out[0, ids.shape[1] :])
    scorer = Scorer(model, tok)
    s_greedy, s_other = scorer.score([(context, greedy_text), (context, " a banana")])
    assert s_greedy.is_greedy and not s_other.is_greedy
    assert s_greedy.logprob > s_other.logprob


def per_chunk_host_sums(scorer, prepared, blocks):
    """The LM-head loop as it was: each chunk's log-probabilities and greedy misses copied to the host and added there
    at once (the reference the one-copy-per-run sums must equal bit for bit)."""
    from pudding.core.models.adapters import hidden_to_logits
    from pudding.core.models.omission import use_blocks
    from pudding.core.scoring import HEAD_CHUNK_ELEMENTS

    totals = torch.zeros(len(prepared.requests), dtype=torch.float64)
    misses = torch.zeros(len(prepared.requests), dtype=torch.long)
    chunk = max(1, HEAD_CHUNK_ELEMENTS // scorer.model.config.vocab_size)
    with torch.inference_mode(), use_blocks(scorer.model, blocks):
        for batch in prepared.batches:
            hidden = scorer._run_batch(batch)[batch.score_rows, batch.score_pos]
            for lo in range(0, hidden.shape[0], chunk):
                logits = hidden_to_logits(scorer.model, hidden[lo : lo + chunk]).float()
                picked = logits.gather(1, batch.targets[lo : lo + chunk, None]).squeeze(1)
                top = logits.amax(dim=-1)
                log_norm = top + logits.sub_(top[:, None]).exp_().sum(dim=-1).log()
                owner = batch.owner[lo : lo + chunk].cpu()
                totals.index_add_(0, owner, (picked - log_norm).double().cpu())
                misses.index_add_(0, owner, (picked < top).long().cpu())
    return [(float(t), bool(m == 0)) for t, m in zip(totals, misses, strict=True)]


@pytest.mark.parametrize("batch_tokens", [1, 48, 4096])
def test_lm_head_sums_kept_per_run_equal_the_per_chunk_host_sums_bit_for_bit(
    tiny_llama, tokenizer, monkeypatch, batch_tokens
):
    """The head's per-position results stay where they are computed and reach the host in one copy per run; summed
    there in position order they are the very floats the per-chunk copies gave (chunks of 3 rows: many per batch)."""
    monkeypatch.setattr("pudding.core.scoring.HEAD_CHUNK_ELEMENTS", 3 * tiny_llama.config.vocab_size)
    scorer = Scorer(tiny_llama, tokenizer, batch_tokens=batch_tokens)
    prepared = scorer.prepare(REQUESTS * 3)
    for blocks in ([0, 1, 2, 3, 4, 5], [0, 2, 5]):
        got = scorer.run(prepared, blocks)[0]
        assert [(s.logprob, s.is_greedy) for s in got] == per_chunk_host_sums(scorer, prepared, blocks)


def test_prepared_batches_are_copied_to_a_device_once_and_kept(tiny_llama, tokenizer, monkeypatch):
    """Search trials and outcome tables run one Prepared many times: its batches go to the device on the first run
    only (``meta`` stands in for a GPU: a real copy, no compute); on a CPU the host batches are used as they are."""
    from pudding.core.scoring import Batch

    copies = []
    real_to = Batch.to
    monkeypatch.setattr(Batch, "to", lambda self, device: copies.append(str(device)) or real_to(self, device))
    scorer = Scorer(tiny_llama, tokenizer, batch_tokens=48)
    prepared = scorer.prepare(REQUESTS)
    n = len(prepared.batches)
    assert n > 1
    assert prepared.on("cpu") is prepared.batches and copies == []
    first = prepared.on("meta")
    assert len(copies) == n and all(b.input_ids.device.type == "meta" for b in first)
    assert prepared.on(torch.device("meta")) is first and len(copies) == n  # kept: no second upload
    for _ in range(3):
        scorer.run(prepared, [0, 2, 5])  # CPU runs: the host batches, never a copy
    assert len(copies) == n
    assert prepared.batches[0].input_ids.device.type == "cpu"  # the host batches stay


def test_search_trials_reuse_one_prepared_set(tiny_llama, tokenizer, monkeypatch):
    """Every trial of the fast greedy search runs the evaluator's one Prepared (so its device copy is made once)."""
    from pudding.core.scoring import Prepared
    from pudding.search.greedy import FastEvaluator, greedy_search
    from pudding.search.objectives import get_loss, text_requests

    seen = []
    real_on = Prepared.on
    monkeypatch.setattr(Prepared, "on", lambda self, device: seen.append(id(self)) or real_on(self, device))
    scorer = Scorer(tiny_llama, tokenizer, batch_tokens=48)
    evaluator = FastEvaluator(scorer, text_requests("t", [c + x for c, x in REQUESTS]))
    greedy_search(evaluator, get_loss("perplexity"), num_omit=2)
    assert evaluator.trials_computed > 4 and set(seen) == {id(evaluator.prepared)}
