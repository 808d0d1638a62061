"""The ``self`` router: features from the base LLM's first blocks, cached; head-only training; routed inference."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import routed_accuracy, tiny_dataset, tiny_model
from test_routed_model import PROMPTS, assert_each_scored_under_its_choice, generated_without

from pudding.cli.train import main
from pudding.core.llm import LLMOptions
from pudding.core.models.adapters import get_layers
from pudding.core.models.loading import load_base
from pudding.core.scoring import Scorer
from pudding.routed.model import PuddingModel
from pudding.router.bundle import load_bundle
from pudding.router.data import RouterDataModule
from pudding.router.self_features import SelfRouterError, keep_first_of, pool_rows

SETS = [[1, 4], [2, 3], [2, 5], [3, 4]]  # none omits block 0: keep_first=1


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_llm_dir) -> dict:
    root = tmp_path_factory.mktemp("self")
    return {"root": root, "llm": tiny_llm_dir, "dataset": tiny_dataset(root / "data", n=24, sets=SETS)}


def data_module(setup: dict) -> RouterDataModule:
    return RouterDataModule(
        datasets=str(setup["dataset"]),
        router="self",
        batch_size=8,
        llm=LLMOptions(base=str(setup["llm"]), dtype="float32", cache_dir=str(setup["root"] / "models")),
    )


def first_block_features(model, tokenizer, text: str) -> torch.Tensor:
    """Reference: run the full model with hidden states out, take block 0's output over the prompt's tokens."""
    ids = Scorer(model, tokenizer).encode_pair(text, " x")[0]
    out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    hidden = out.hidden_states[1][0]  # after block 0
    return torch.cat([hidden.mean(0), hidden[-1]])


def test_features_are_the_first_blocks_output_pooled_and_cached(setup, tiny_llama, tokenizer, monkeypatch):
    data = data_module(setup)
    data.setup("fit")
    rows = data.train_set + data.val_set
    assert data.meta["self_features"]["keep_first"] == 1 and data.meta["self_features"]["hidden_size"] == 32
    from pudding.routerdata.dataset import load_router_dataset

    table = load_router_dataset(setup["dataset"])[0].to_dict()
    text_of = {(t, i): x for t, i, x in zip(table["task"], table["item_id"], table["router_text"], strict=True)}
    with torch.no_grad():
        for row in rows[:5]:
            want = first_block_features(tiny_llama, tokenizer, text_of[(row["task"], row["item_id"])])
            torch.testing.assert_close(row["features"], want, atol=1e-5, rtol=1e-5)
    cached = list((setup["dataset"].parent / "data.self_features").glob("*.safetensors"))
    assert len(cached) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("the cached features must be reused without loading the base model")

    monkeypatch.setattr("pudding.core.models.loading.load_base", refuse)
    again = data_module(setup)
    again.setup("fit")
    torch.testing.assert_close(
        torch.stack([r["features"] for r in again.train_set]), torch.stack([r["features"] for r in data.train_set])
    )
    batch = next(iter(again.train_dataloader()))
    assert batch["features"].shape == (8, 64) and batch["targets"].shape == (8, 4)

    # under DDP each rank gets its own share: training rows split between the ranks, validation rows each once
    seen: dict[str, list[list[str]]] = {"train": [], "val": []}
    for rank in (0, 1):
        again._ranks = lambda rank=rank: (2, rank)
        seen["train"].append([i for b in again.train_dataloader() for i in b["item_id"]])
        seen["val"].append([i for b in again.val_dataloader() for i in b["item_id"]])
    train_ids = [r["item_id"] for r in again.train_set]
    assert not set(seen["train"][0]) & set(seen["train"][1]) and set(sum(seen["train"], [])) == set(train_ids)
    assert sorted(sum(seen["val"], [])) == sorted(r["item_id"] for r in again.val_set)  # every row once, no repeat


def test_pool_rows_mean_and_last_of_each_rows_prefix():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    got = pool_rows(hidden, [2, 3])
    torch.testing.assert_close(got[0], torch.tensor([1.0, 2.0, 2.0, 3.0]))
    torch.testing.assert_close(got[1], torch.tensor([8.0, 9.0, 10.0, 11.0]))


def test_keep_first_comes_from_the_candidate_file_and_is_checked():
    assert keep_first_of({"omission_sets": SETS}, {}) == 1
    assert keep_first_of({"omission_sets": [[2, 3]]}, {"keep_first": 2}) == 2
    with pytest.raises(SelfRouterError, match="omits block 1, below keep_first=2"):
        keep_first_of({"omission_sets": SETS}, {"keep_first": 2})


def fit_args(setup: dict, out) -> list[str]:
    """``pudding-train fit --model.encoder self`` on the tiny dataset for a few epochs, logging under ``out``."""
    return [
        "fit",
        "--data.datasets",
        str(setup["dataset"]),
        "--model.encoder",
        "self",
        "--model.pooling",
        "mean_last",
        "--model.head_hidden",
        "[16]",
        "--model.lr",
        "1e-2",
        "--model.warmup_steps",
        "0",
        "--data.llm.base",
        str(setup["llm"]),
        "--data.llm.dtype",
        "float32",
        "--data.llm.cache_dir",
        str(setup["root"] / "models"),
        "--data.batch_size",
        "8",
        "--trainer.max_epochs",
        "3",
        "--trainer.logger.init_args.save_dir",
        str(out),
    ]


@pytest.fixture(scope="module")
def trained(setup, tmp_path_factory) -> dict:
    """``pudding-train fit --model.encoder self`` for a few epochs; the bundle it exports."""
    out = tmp_path_factory.mktemp("fit")
    bundle = out / "bundle"
    main([*fit_args(setup, out), "--bundle", str(bundle)])
    return {"bundle": bundle, "out": out}


def test_fit_with_encoder_self_writes_a_head_only_bundle(setup, trained):
    bundle = trained["bundle"]
    config = json.loads((bundle / "router.json").read_text())
    assert config["encoder"] == "self"
    assert config["self"]["keep_first"] == 1 and config["self"]["pooling"] == "mean_last"
    assert config["self"]["num_blocks"] == 6 and config["self"]["hidden_size"] == 32
    from safetensors.torch import load_file

    state = load_file(str(bundle / "router.safetensors"))
    assert sorted(state) == ["head.0.bias", "head.0.weight", "head.3.bias", "head.3.weight"]
    assert state["head.0.weight"].shape == (16, 64) and state["head.3.weight"].shape == (4, 16)


def test_bundle_routes_texts_from_the_given_base_model(setup, trained, tiny_llama, tokenizer):
    from pudding.core.models.loading import BaseModel

    lm = BaseModel(model=tiny_llama, tokenizer=tokenizer, name=str(setup["llm"]))
    router, config = load_bundle(trained["bundle"], base_num_blocks=6, lm=lm)
    with torch.no_grad():
        features = torch.stack([first_block_features(tiny_llama, tokenizer, p) for p in PROMPTS])
        want = router.head(features).argmax(-1).tolist()
    assert router.route_texts(PROMPTS) == want
    shallow = BaseModel(model=tiny_model("llama", len(tokenizer), num_layers=4), tokenizer=tokenizer, name="4 blocks")
    with pytest.raises(SelfRouterError, match="with 6 blocks, the base model given has 4"):
        load_bundle(trained["bundle"], lm=shallow)


@pytest.fixture(scope="module")
def routed(setup, trained) -> PuddingModel:
    return spread(load_self_routed(setup, trained, "cpu"))


@pytest.fixture(scope="module")
def routed_on(routed, setup, trained, device) -> PuddingModel:
    """:func:`routed` on :func:`device`: the very object on the CPU, loaded and spread the same way elsewhere."""
    return routed if device.type == "cpu" else spread(load_self_routed(setup, trained, str(device)))


def load_self_routed(setup: dict, trained: dict, device: str) -> PuddingModel:
    return PuddingModel.from_pretrained(
        trained["bundle"], base=str(setup["llm"]), device=device, dtype="float32", cache_dir=setup["root"] / "models"
    )


def spread(model: PuddingModel) -> PuddingModel:
    """``model`` with its router's last layer rewritten to spread :data:`PROMPTS` over candidates."""
    # spread the prompts over candidates: row i of the last layer points at prompt i's (centred) hidden activations
    router = model.router
    with torch.no_grad():
        inner = router.head[:-1](router.encoder(router.encoder.texts(PROMPTS)))
        centred = inner - inner.mean(dim=0)
        router.head[-1].weight.copy_(centred / centred.norm(dim=1, keepdim=True))
        router.head[-1].bias.zero_()
    assert len(set(model.route(PROMPTS))) > 1, "the fixture router should spread the prompts over candidates"
    return model


def test_self_routed_loglikelihood_equals_the_chosen_set_from_scratch_and_runs_block0_once(routed_on):
    routed = routed_on
    requests = [(p, c) for p in PROMPTS for c in (" yes", " no, not at all")]
    calls = []
    layer0 = get_layers(routed.lm.model)[0]
    hook = layer0.register_forward_hook(lambda *_: calls.append(1))
    try:
        got = routed.loglikelihood(requests)
    finally:
        hook.remove()
    prepared = routed.scorer.prepare(requests)
    assert len(calls) == len(prepared.batches), "block 0 must run once per batch, never again per candidate"
    choices = assert_each_scored_under_its_choice(routed, requests, got)
    assert len(set(choices)) > 1


def test_self_routed_generate_equals_a_model_rebuilt_without_the_chosen_blocks_and_runs_block0_once(routed_on):
    routed = routed_on
    prompts = [*PROMPTS, PROMPTS[1]]  # a repeated prompt is pre-filled once and generated twice
    widths = []
    layer0 = get_layers(routed.lm.model)[0]
    hook = layer0.register_forward_hook(lambda _m, args, _out: widths.append(tuple(args[0].shape[:2])))
    try:
        out = routed.generate(prompts, max_new_tokens=5)
    finally:
        hook.remove()
    tokenizer = routed.lm.tokenizer
    longest = max(len(tokenizer(p)["input_ids"]) for p in PROMPTS)
    # the prompts go through block 0 once, together; after that only generate's steps, one token each
    assert widths[0] == (len(PROMPTS), longest) and all(w == 1 for _, w in widths[1:])
    assert len(set(routed.route(PROMPTS))) > 1 and len(widths) <= 1 + 5 * len(set(routed.route(PROMPTS)))
    assert out[-1] == out[1]
    for prompt, choice, text in zip(prompts, routed.route(prompts), out, strict=True):
        assert text == generated_without(routed.lm.model, tokenizer, routed.omission_sets[choice], prompt, 5)


def test_self_routed_prefill_equals_the_chosen_set_and_bench_times_it(routed_on):
    routed = routed_on
    from pudding.routed.bench import bench_length, first_blocks, generate, prefill, route_hidden, self_routed_prefill
    from pudding.routed.self_prefill import routed_prefill

    model, tokenizer, router = routed.lm.model, routed.lm.tokenizer, routed.router
    seen = set()
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(routed.lm.device)
        choice = route_hidden(router, first_blocks(model, ids, 1))
        assert choice == router.route_texts([prompt])[0]
        seen.add(choice)
        got = self_routed_prefill(model, ids, router, routed.omission_sets)
        torch.testing.assert_close(got, prefill(model, ids, routed.omission_sets[choice]), atol=1e-5, rtol=1e-5)
        # bench's routed generation: the same first pass fills the cache generation continues from
        (part,) = routed_prefill(model, ids, torch.ones_like(ids), 1, routed.omission_sets, lambda h, c=choice: [c])
        cached = generate(model, ids, 4, routed.omission_sets[choice], cache=part.cache)
        assert torch.equal(cached, generate(model, ids, 4, routed.omission_sets[choice]))
    assert len(seen) > 1
    row = bench_length(model, tokenizer, router, routed.omission_sets, 12, new_tokens=2, repeats=1, warmup=0)
    assert row["router_kind"] == "self" and row["omit"] == list(routed.omission_sets[row["choice"]])
    assert row["router"]["runs"] == 1 and row["routed_generate_tokens_per_s"] > 0


def test_eval_bundle_accepts_a_self_bundle(setup, trained, shared_data, tmp_path, device):
    from pudding.core.tasks import DataOptions, eval_items
    from pudding.routed.evaluate import evaluate_bundle

    options = DataOptions(data_dir=str(shared_data))
    report = evaluate_bundle(
        str(trained["bundle"]),
        ["piqa"],
        options,
        limit=4,
        base=str(setup["llm"]),
        dtype="float32",
        device=str(device),
        cache_dir=setup["root"] / "models",
        outcomes_dir=tmp_path / "outcomes",
        sleb=False,
        output=tmp_path / "results",
        log=lambda _: None,
    )
    model = load_self_routed(setup, trained, str(device))
    items = eval_items("piqa", options)[0][:4]
    routed_name = next(name for name, kind in report["kinds"].items() if kind == "routed")
    assert report["results"][routed_name]["piqa"]["acc"] == pytest.approx(routed_accuracy(model, items))
    assert sum(report["routing_histogram"]["piqa"]) == 4


def test_routed_prefill_fills_the_cache_a_plain_prefill_of_the_chosen_set_fills(tiny_llama_on, tokenizer, device):
    """keep_first=2, two rows routed to different sets: cache layer i is the i-th kept block's, prompt minus one."""
    tiny_llama = tiny_llama_on
    from transformers import DynamicCache

    from pudding.core.models.omission import omit_blocks
    from pudding.routed.self_prefill import routed_prefill

    sets = [[2, 4], [3]]
    saved = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(PROMPTS[:2], return_tensors="pt", padding=True).to(device)
    finally:
        tokenizer.padding_side = saved
    ids, mask = batch["input_ids"], batch["attention_mask"]
    seen = []

    def choose(hidden):
        seen.append(hidden)
        return [1, 0]

    parts = routed_prefill(tiny_llama, ids, mask, 2, sets, choose)
    assert [(p.choice, p.rows) for p in parts] == [(1, [0]), (0, [1])]
    # what the router read: the input of block 2 of the dense model
    dense = tiny_llama(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    real = mask.bool()
    torch.testing.assert_close(seen[0][real], dense.hidden_states[2][real], atol=1e-5, rtol=1e-5)
    for part in parts:
        row = part.rows[0]
        length = int(mask[row].sum())
        plain = DynamicCache()
        with omit_blocks(tiny_llama, sets[part.choice]), torch.no_grad():
            tiny_llama(input_ids=ids[row : row + 1, -length:-1], cache=plain, use_cache=True)
        assert len(part.cache.layers) == len(plain.layers) == 6 - len(sets[part.choice])
        for got, want in zip(part.cache.layers, plain.layers, strict=True):
            assert got.keys.shape[-2] == ids.shape[1] - 1
            torch.testing.assert_close(got.keys[:, :, -(length - 1) :], want.keys, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(got.values[:, :, -(length - 1) :], want.values, atol=1e-5, rtol=1e-5)


def test_zeroshot_callback_computes_a_self_routers_item_features_from_its_one_llm(
    setup, trained, tiny_llama, tokenizer, tmp_path, monkeypatch
):
    from test_router_zeroshot import write_data

    from pudding.core.tasks import clear_cache
    from pudding.router import zeroshot

    router, _ = load_bundle(trained["bundle"])  # no LLM attached: its encoder would load one to route
    meta = {
        "base_model": str(setup["llm"]),
        "omission_sets": SETS,
        "tasks": ["arc_easy", "boolq"],
        "router_fraction": 0.5,
        "split_seed": 0,
    }
    clear_cache()
    cb = zeroshot.ZeroShotEvalCallback(
        limit=3,
        data_dir=str(write_data(tmp_path / "data")),
        llm=LLMOptions(dtype="float32", device="cpu", cache_dir=str(setup["root"] / "models")),
        cache_dir=tmp_path / "cache",
        outcomes_dir=tmp_path / "outcomes",
    )
    sets = cb.plan(meta, [], router.omission_sets, torch.device("cpu"))
    loads = []
    monkeypatch.setattr(zeroshot, "load_base", lambda *a, **k: loads.append(a) or load_base(*a, **k))

    def refuse(*args, **kwargs):
        raise AssertionError("the self encoder loaded a second copy of the base model")

    monkeypatch.setattr("pudding.core.models.loading.load_base", refuse)
    cb.load_or_compute(sets, router)
    texts = [item.router_text for items in cb.items.values() for item in items]
    assert len(loads) == 1 and len(texts) == 6
    got = router.predict_texts(texts)
    router.encoder.attach(tiny_llama, tokenizer)  # reference: the features from the model itself, fresh
    torch.testing.assert_close(got, router.predict_texts(texts), atol=1e-5, rtol=1e-5)
    clear_cache()


# ------------------------------------------------------------------------------------------- with the dense choice


@pytest.fixture(scope="module")
def dense_self(setup, tmp_path_factory) -> PuddingModel:
    """A ``self`` router that may also answer "dense" (``data.dense_choice``, a compute budget), fitted and loaded."""
    out = tmp_path_factory.mktemp("fit_dense")
    extra = ["--data.dense_choice", "true", "--data.val_fraction", "0.25", "--budget", "0.9"]
    main([*fit_args(setup, out), *extra, "--bundle", str(out / "bundle")])
    return PuddingModel.from_pretrained(
        out / "bundle", base=str(setup["llm"]), device="cpu", dtype="float32", cache_dir=setup["root"] / "models"
    )


def test_self_router_with_the_dense_choice_at_budget_one_is_the_dense_model(dense_self):
    model = dense_self
    assert [list(s) for s in model.omission_sets] == [*SETS, []] and model.budget == 0.9
    model.set_budget(1.0)
    try:
        assert model.route(PROMPTS) == [len(SETS)] * len(PROMPTS)
        requests = [(p, c) for p in PROMPTS for c in (" yes", " no, not at all")]
        got = model.loglikelihood(requests)
        want = Scorer(model.lm.model, model.lm.tokenizer).score(requests, omit=())
        assert [g.is_greedy for g in got] == [w.is_greedy for w in want]
        assert [g.logprob for g in got] == pytest.approx([w.logprob for w in want], abs=1e-4)
        tokenizer = model.lm.tokenizer
        ids = tokenizer(PROMPTS[0], return_tensors="pt")
        dense = model.lm.model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        text = tokenizer.decode(dense[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        assert model.generate(PROMPTS[:1], max_new_tokens=5) == [text]
    finally:
        model.set_budget(0.9)


def test_self_router_mixing_dense_and_candidates_equals_each_choice_from_scratch(dense_self):
    model = dense_self
    prompts = [*PROMPTS, "Rivers and stones, a fifth prompt so that each of the five choices can get one:"]
    model.set_budget("argmax")
    router = model.router
    try:
        with torch.no_grad():  # fit the last layer so that prompt i predicts a one-hot on choice i
            inner = router.head[:-1](router.encoder(router.encoder.texts(prompts)))
            router.head[-1].weight.copy_((torch.linalg.pinv(inner) @ torch.eye(len(prompts))).T)
            router.head[-1].bias.zero_()
        choices = model.route(prompts)
        assert choices == list(range(len(SETS) + 1))  # the last one is dense
        requests = [(p, c) for p in prompts for c in (" yes", " no, not at all")]
        assert_each_scored_under_its_choice(model, requests, model.loglikelihood(requests))
        tokenizer = model.lm.tokenizer
        for prompt, choice, text in zip(prompts, choices, model.generate(prompts, max_new_tokens=5), strict=True):
            assert text == generated_without(model.lm.model, tokenizer, model.omission_sets[choice], prompt, 5)
    finally:
        model.set_budget(0.9)
