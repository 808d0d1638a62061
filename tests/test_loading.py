"""Loading a base model: straight onto its device, a GGUF cache per run dtype (float32's folder and numbers as they
were), and accelerate's device map over several GPUs (planned here on stand-in GPUs; blocks still skip under its
hooks)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_model
from test_scoring import REQUESTS

from pudding.core.errors import OptionError
from pudding.core.llm import LLMOptions
from pudding.core.models import loading
from pudding.core.models.adapters import get_layers
from pudding.core.models.loading import (
    BaseModelError,
    default_gguf_path,
    gguf_cache_dir,
    load_base,
    resolve_source,
    spread_map,
)
from pudding.core.scoring import Scorer
from pudding.routed.bench import generate, make_prompt

CACHE = REPO / "checkpoints" / "base_models"


def test_gguf_cache_has_one_folder_per_dtype_and_float32_keeps_its_own():
    gguf = default_gguf_path()
    stem = f"{gguf.stem}-{loading._file_sha256(gguf)[:16]}-v2"
    assert gguf_cache_dir(gguf, CACHE).name == stem  # the folder every float32 result was made from
    assert gguf_cache_dir(gguf, CACHE, torch.bfloat16).name == stem + "-bfloat16"
    assert gguf_cache_dir(gguf, CACHE, torch.float16).name == stem + "-float16"


@pytest.mark.slow
def test_float32_load_is_the_cached_file_bit_for_bit(default_base):
    """The float32 run reads the folder it always read, and its weights are that file's tensors, unchanged."""
    from safetensors.torch import load_file

    folder = Path(resolve_source("default", CACHE))
    assert folder == gguf_cache_dir(default_gguf_path(), CACHE)
    stored = load_file(folder / "model.safetensors")
    state = default_base.model.state_dict()
    assert stored and all(torch.equal(state[name], tensor) for name, tensor in stored.items())
    assert default_base.model.dtype == torch.float32 and default_base.device == torch.device("cpu")


@pytest.mark.slow
def test_bfloat16_cache_is_the_float32_weights_rounded_as_a_bfloat16_load_of_them_was(default_base, tmp_path):
    """A bfloat16 run gets its own folder, made from the float32 cache: its weights are exactly the float32 ones cast
    to bfloat16, which is what loading the float32 folder in bfloat16 gave; the float32 folder is not touched."""
    gguf = default_gguf_path()
    plain = gguf_cache_dir(gguf, CACHE)
    (tmp_path / plain.name).symlink_to(plain.resolve(), target_is_directory=True)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in plain.iterdir())
    lm = load_base("default", dtype="bfloat16", device="cpu", cache_dir=tmp_path)
    folder = gguf_cache_dir(gguf, tmp_path, torch.bfloat16)
    assert (folder / "model.safetensors").is_file() and not folder.is_symlink()
    assert (folder / "model.safetensors").stat().st_size < 0.6 * (plain / "model.safetensors").stat().st_size
    old = default_base.model.state_dict()
    new = lm.model.state_dict()
    assert new.keys() == old.keys()
    assert all(new[k].dtype == torch.bfloat16 and torch.equal(new[k], old[k].to(torch.bfloat16)) for k in old)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in plain.iterdir()) == before


@pytest.fixture(scope="module")
def llm_shape():
    """A Llama whose blocks, not its vocabulary, hold most weights (as in a real LLM), and its float32 bytes."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        "llama",
        vocab_size=1000,
        hidden_size=128,
        num_hidden_layers=12,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=512,
        tie_word_embeddings=False,
    )
    return config, 4 * AutoModelForCausalLM.from_config(config).num_parameters()


@pytest.mark.parametrize("gpus", [2, 4])
def test_spread_map_puts_whole_blocks_on_every_gpu_in_order(llm_shape, gpus):
    """Planned on an empty copy: stand-in GPUs with room for 1.6 / gpus of the model each share its blocks."""
    config, size = llm_shape
    placement = spread_map("tiny", config, torch.float32, max_memory=dict.fromkeys(range(gpus), int(1.6 * size / gpus)))
    assert set(placement.values()) == set(range(gpus))
    blocks = [placement[f"model.layers.{i}"] for i in range(config.num_hidden_layers)]  # whole blocks only
    assert blocks == sorted(blocks) and placement["model.embed_tokens"] == 0 and placement["lm_head"] == gpus - 1


def test_spread_map_refuses_a_model_larger_than_the_gpus_in_one_line(llm_shape):
    config, size = llm_shape
    with pytest.raises(BaseModelError) as info:
        spread_map("tiny", config, torch.float32, max_memory={0: int(0.4 * size), 1: int(0.4 * size)})
    message = str(info.value)
    assert "\n" not in message and "'tiny' (float32) does not fit on 2 GPU(s)" in message
    assert "would go to the CPU or disk" in message


def test_device_map_auto_on_a_cpu_loads_the_plain_model(tiny_llm_dir, tiny_llama):
    lm = load_base(str(tiny_llm_dir), dtype="float32", device="auto", device_map="auto")
    assert lm.device == torch.device("cpu") and not hasattr(get_layers(lm.model)[0], "_hf_hook")
    state = tiny_llama.state_dict()
    assert all(torch.equal(t, state[k]) for k, t in lm.model.state_dict().items())


def test_device_map_options_are_checked_in_one_line(monkeypatch, tiny_llm_dir):
    from pudding.routerdata.predict import ScoringModule

    assert LLMOptions().device_map is None and LLMOptions(device_map="auto", device="cuda").device_map == "auto"
    with pytest.raises(OptionError, match=r"^option device_map: 'balanced' is not null or auto$"):
        LLMOptions(device_map="balanced")
    with pytest.raises(OptionError, match="device 'cpu' must then be auto or cuda"):
        LLMOptions(device_map="auto", device="cpu")
    with pytest.raises(OptionError, match="option device_map: 'auto'; pudding dataset loads the model on each"):
        ScoringModule("c.yaml", llm=LLMOptions(device_map="auto"))
    # one model over all GPUs cannot also be one copy per process
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(loading, "resolve_device", lambda device: torch.device("cuda"))
    with pytest.raises(BaseModelError, match="cannot be combined with a multi-process launch"):
        load_base(str(tiny_llm_dir), device_map="auto")


def test_blocks_skip_and_score_exactly_under_accelerate_hooks(tokenizer):
    """A spread model runs every module under accelerate's hooks (inputs moved to each block's device). On one CPU
    the hooks move nothing, so everything must be bit-identical to the plain model: omission, the engine's captures
    and restarts, and generation with blocks skipped."""
    from accelerate import dispatch_model

    plain, hooked = tiny_model("llama", len(tokenizer)), tiny_model("llama", len(tokenizer))
    names = ["model.embed_tokens", "model.rotary_emb", "model.norm", "lm_head"]
    dispatch_model(
        hooked, {**dict.fromkeys(names, "cpu"), **{f"model.layers.{i}": "cpu" for i in range(6)}}, force_hooks=True
    )
    assert hasattr(get_layers(hooked)[3], "_hf_hook")
    for omit in [(), (1, 4)]:
        assert Scorer(hooked, tokenizer, batch_tokens=48).score(REQUESTS, omit) == Scorer(
            plain, tokenizer, batch_tokens=48
        ).score(REQUESTS, omit)
    scorers = [Scorer(m, tokenizer, batch_tokens=48) for m in (plain, hooked)]
    runs = []
    for scorer in scorers:
        prepared = scorer.prepare(REQUESTS)
        _, captured = scorer.run(prepared, capture=[3])
        runs.append(scorer.run(prepared, [4, 5], start_hidden=captured[3])[0])
    assert runs[0] == runs[1]
    ids, _ = make_prompt(tokenizer, 12)
    assert torch.equal(generate(plain, ids, 6, (2, 3)), generate(hooked, ids, 6, (2, 3)))
