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
