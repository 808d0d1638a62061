"""Block omission: only kept blocks run, in order; nothing changes for the empty set; restore always happens."""

from __future__ import annotations

import pytest
import torch
from conftest import on_device, tiny_model

from pudding.core.models.adapters import adapter_for, get_layers, num_blocks
from pudding.core.models.omission import OmissionError, kept_blocks, omit_blocks, validate_omission

FAMILIES = ["llama", "qwen2", "mistral", "gemma", "gemma2", "opt", "gpt2", "gpt_neox"]
VOCAB = 256


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _call_log(model):
    """Record which blocks (by original index) are called, in order."""
    calls, hooks = [], []
    for i, layer in enumerate(get_layers(model)):
        hooks.append(layer.register_forward_pre_hook(lambda m, a, i=i: calls.append(i)))
    return calls, hooks


@pytest.mark.parametrize("family", FAMILIES)
def test_only_kept_blocks_run_and_logits_change(family, device):
    model = on_device(tiny_model(family, VOCAB), device)
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1)).to(device)
    dense = _logits(model, ids)
    calls, hooks = _call_log(model)
    with omit_blocks(model, [1, 4]):
        pruned = _logits(model, ids)
        assert num_blocks(model) == 4
    for h in hooks:
        h.remove()
    assert calls == [0, 2, 3, 5], "omitted blocks must never be called; kept ones run once, in order"
    assert not torch.allclose(dense, pruned, atol=1e-4), "skipping blocks must change the logits"
    with omit_blocks(model, []):
        torch.testing.assert_close(_logits(model, ids), dense, rtol=0, atol=0)
    torch.testing.assert_close(_logits(model, ids), dense, rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_restored_after_exception(family):
    model = tiny_model(family, VOCAB)
    layers = get_layers(model)
    config_before = model.config.to_dict()
    idx_before = [(m, m.layer_idx) for m in model.modules() if isinstance(getattr(m, "layer_idx", None), int)]
    with pytest.raises(RuntimeError, match="boom"), omit_blocks(model, [0, 2, 3]):
        assert len(get_layers(model)) == 3
        raise RuntimeError("boom")
    assert get_layers(model) is layers
    assert model.config.to_dict() == config_before
    assert [(m, m.layer_idx) for m, _ in idx_before] == idx_before


def test_pruned_model_equals_a_model_built_without_those_blocks(device):
    """Omitting blocks is exactly running a smaller model made of the kept blocks."""
    model = on_device(tiny_model("llama", VOCAB), device)
    small = on_device(tiny_model("llama", VOCAB, num_layers=3), device)
    keep = [0, 3, 5]
    small.model.embed_tokens.load_state_dict(model.model.embed_tokens.state_dict())
    small.model.norm.load_state_dict(model.model.norm.state_dict())
    small.lm_head.load_state_dict(model.lm_head.state_dict())
    for new, old in enumerate(keep):
        small.model.layers[new].load_state_dict(model.model.layers[old].state_dict())
    ids = torch.randint(0, VOCAB, (1, 10), generator=torch.Generator().manual_seed(2)).to(device)
    with omit_blocks(model, [1, 2, 4]):
        torch.testing.assert_close(_logits(model, ids), _logits(small, ids), rtol=1e-5, atol=1e-5)


def test_generation_with_cache_under_omission(device):
    """KV-cached generation works on the pruned model and matches uncached greedy decoding."""
    model = on_device(tiny_model("qwen2", VOCAB), device)
    ids = torch.randint(0, VOCAB, (1, 6), generator=torch.Generator().manual_seed(3)).to(device)
    with omit_blocks(model, [2, 3]):
        cached = model.generate(ids, max_new_tokens=5, do_sample=False, use_cache=True)
        plain = ids
        for _ in range(5):
            nxt = _logits(model, plain)[:, -1].argmax(-1, keepdim=True)
            plain = torch.cat([plain, nxt], dim=1)
    assert torch.equal(cached, plain)


def test_validation_errors():
    assert validate_omission([5, 1], 6) == (1, 5)
    assert kept_blocks([1, 4], 6) == (0, 2, 3, 5)
    with pytest.raises(OmissionError, match=r"\[7\] are outside 0..5"):
        validate_omission([1, 7], 6)
    with pytest.raises(OmissionError, match="outside"):
        validate_omission([-1], 6)
    with pytest.raises(OmissionError, match=r"blocks \[2\] are listed more than once"):
        validate_omission([2, 2], 6)
    with pytest.raises(OmissionError, match="removes all 3 blocks"):
        validate_omission([0, 1, 2], 3)


def test_unknown_layout_is_a_clear_error():
    with pytest.raises(TypeError, match="no decoder block list"):
        adapter_for(torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_default_model_omission(default_base):
    model, tok = default_base.model, default_base.tokenizer
    assert num_blocks(model) == 30
    ids = torch.tensor([tok.encode("The capital of France is Paris, and the capital of Italy is")])
    dense = _logits(model, ids)
    with omit_blocks(model, []):
        torch.testing.assert_close(_logits(model, ids), dense, rtol=0, atol=0)
    calls, hooks = _call_log(model)
    with omit_blocks(model, [5, 9, 13]):
        pruned = _logits(model, ids)
    for h in hooks:
        h.remove()
    assert 5 not in calls and 9 not in calls and 13 not in calls and len(calls) == 27
    assert (dense - pruned).abs().max() > 0.1
    with pytest.raises(ValueError, match="boom"), omit_blocks(model, [1, 2]):
        raise ValueError("boom")
    assert num_blocks(model) == 30 and model.config.num_hidden_layers == 30
    torch.testing.assert_close(_logits(model, ids), dense, rtol=0, atol=0)
