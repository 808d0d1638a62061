"""Routed inference: PuddingModel and the lm-eval model give what scoring each request with its chosen set gives."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from conftest import module_with_data, routed_accuracy, tiny_dataset, tiny_encoder

from pudding.core.errors import OptionError
from pudding.core.models.omission import kept_blocks
from pudding.core.scoring import Scorer
from pudding.routed.model import PuddingModel, group_by_choice
from pudding.router.bundle import export_bundle

PROMPTS = [
    "Question: Which is heavier, a stone or a leaf?\nAnswer:",
    "The river ran past the old mill and",
    "Question: a dog?\nAnswer:",
    "She counted the coins twice before",
]


@pytest.fixture(scope="module")
def routed(tmp_path_factory, tiny_llm_dir) -> PuddingModel:
    root = tmp_path_factory.mktemp("routed")
    setup = {"encoder": tiny_encoder(root / "bert"), "dataset": tiny_dataset(root / "data")}
    module, _ = module_with_data(setup)
    # a router whose choices differ between prompts: head row i points at prompt i's (centred) pooled features
    seen = []
    hook = module.router.head.register_forward_hook(lambda _m, args, _out: seen.append(args[0].detach()))
    module.router.predict_texts(PROMPTS)
    hook.remove()
    features = torch.cat(seen)[: len(PROMPTS)]
    centred = features - features.mean(dim=0)
    with torch.no_grad():
        module.router.head.weight.copy_(centred / centred.norm(dim=1, keepdim=True))
        module.router.head.bias.zero_()
    bundle = export_bundle(module, root / "bundle")
    return PuddingModel.from_pretrained(
        bundle, base=str(tiny_llm_dir), device="cpu", dtype="float32", cache_dir=root / "c"
    )


@pytest.fixture(scope="module")
def routed_on(routed, device) -> PuddingModel:
    """:func:`routed` on :func:`device`: the very object on the CPU, the same bundle and base model loaded elsewhere."""
    if device.type == "cpu":
        return routed
    root = routed.bundle_dir.parent
    return PuddingModel.from_pretrained(
        routed.bundle_dir, base=routed.lm.name, device=str(device), dtype="float32", cache_dir=root / "c"
    )


def test_prompts_are_routed_to_several_candidates_once_each(routed_on, monkeypatch):
    routed = routed_on
    calls = []
    original = routed.router.route_texts
    monkeypatch.setattr(routed.router, "route_texts", lambda texts: calls.append(list(texts)) or original(texts))
    choices = routed.route(PROMPTS + PROMPTS[:2])
    assert calls == [PROMPTS]  # each distinct prompt once
    assert choices == original(PROMPTS) + original(PROMPTS[:2])
    assert len(set(choices)) > 1, "the fixture router should spread the prompts over candidates"


def assert_each_scored_under_its_choice(model, requests, got) -> list[int]:
    """Each routed score equals its request scored from scratch by a plain ``Scorer`` under the set its context was
    routed to: routed loglikelihood's reference. Returns the choices (per request) for further checks."""
    choices = model.route([context for context, _ in requests])
    reference = Scorer(model.lm.model, model.lm.tokenizer)
    for request, choice, score in zip(requests, choices, got, strict=True):
        (want,) = reference.score([request], omit=model.omission_sets[choice])
        assert score.num_tokens == want.num_tokens and score.is_greedy == want.is_greedy
        assert score.logprob == pytest.approx(want.logprob, abs=1e-4)
    return choices


def test_loglikelihood_equals_scoring_each_request_with_its_chosen_set(routed_on):
    routed = routed_on
    requests = [(p, c) for p in PROMPTS for c in (" yes", " no, not at all")]
    got = routed.loglikelihood(requests)
    assert_each_scored_under_its_choice(routed, requests, got)
    one_by_one = [routed.loglikelihood([r])[0] for r in requests]
    assert [s.logprob for s in got] == pytest.approx([s.logprob for s in one_by_one], abs=1e-4)


def rebuilt_without(model, omit):
    """An independent copy of ``model`` that simply has fewer layers (the kept ones' weights, renumbered)."""
    from transformers import AutoModelForCausalLM

    kept = kept_blocks(omit, model.config.num_hidden_layers)
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(kept)
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = [config.layer_types[b] for b in kept]
    small = AutoModelForCausalLM.from_config(config).eval().to(next(model.parameters()).device)
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("model.layers."):
            index, rest = key.removeprefix("model.layers.").split(".", 1)
            if int(index) not in kept:
                continue
            key = f"model.layers.{kept.index(int(index))}.{rest}"
        state[key] = value
    small.load_state_dict(state)
    return small


def generated_without(model, tokenizer, omit, prompt: str, max_new_tokens: int) -> str:
    """Greedy text after ``prompt`` from a copy of ``model`` rebuilt without ``omit``: routed generation's reference."""
    small = rebuilt_without(model, omit)
    ids = tokenizer(prompt, return_tensors="pt").to(small.device)
    out = small.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def test_generate_equals_a_model_rebuilt_without_the_chosen_blocks(routed_on):
    routed = routed_on
    out = routed.generate(PROMPTS, max_new_tokens=6)
    tokenizer = routed.lm.tokenizer
    for prompt, choice, text in zip(PROMPTS, routed.route(PROMPTS), out, strict=True):
        assert text == generated_without(routed.lm.model, tokenizer, routed.omission_sets[choice], prompt, 6)


def test_lm_eval_model_answers_lm_evals_own_instances(routed_on, monkeypatch):
    routed = routed_on
    import lm_eval.api.registry as registry
    from lm_eval.api.instance import Instance

    import pudding  # noqa: F401  (registers the model)
    from pudding.integrations.lmeval import PuddingLM

    assert registry.get_model("pudding") is PuddingLM and registry.get_model("hf").__name__ == "HFLM"
    monkeypatch.setattr(PuddingModel, "from_pretrained", classmethod(lambda cls, *a, **k: routed))
    monkeypatch.setenv("WORLD_SIZE", "2")  # accelerate launch / torchrun: every process would evaluate everything
    with pytest.raises(OptionError, match="runs in one process, this launch has WORLD_SIZE=2"):
        PuddingLM.create_from_arg_string("bundle=unused,dtype=float32")
    monkeypatch.delenv("WORLD_SIZE")
    lm = PuddingLM.create_from_arg_string("bundle=unused,dtype=float32")
    requests = [
        Instance("loglikelihood", {}, (PROMPTS[i], " yes"), idx=0, metadata=("t", i, 1)) for i in range(len(PROMPTS))
    ]
    got = lm.loglikelihood(requests)
    want = routed.loglikelihood([(p, " yes") for p in PROMPTS])
    assert [g[0] for g in got] == pytest.approx([w.logprob for w in want]) and lm.choices == routed.route(PROMPTS)
    (text,) = lm.generate_until([Instance("generate_until", {}, (PROMPTS[0], {"until": ["\n"], "max_gen_toks": 5}), 0)])
    assert "\n" not in text


def test_group_by_choice_keeps_positions_in_order():
    assert group_by_choice([2, 0, 2, 1, 0]) == {2: [0, 2], 0: [1, 4], 1: [3]}


def test_empty_or_too_long_prompts_are_refused_by_position(routed):
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        routed.route(["fine", "  "])
    too_long = "word " * (routed.scorer.max_length + 10)
    with pytest.raises(ValueError, match=r"prompt 0 has \d+ tokens, more than the base model's context of \d+"):
        routed.generate([too_long])


def test_bundle_for_another_block_count_is_refused(routed, tmp_path):
    from conftest import tiny_model

    from pudding.router.bundle import BundleError

    other = tmp_path / "llm8"
    tiny_model("llama", len(routed.lm.tokenizer), num_layers=8).save_pretrained(other)
    routed.lm.tokenizer.save_pretrained(other)
    bundle = routed.bundle_dir
    with pytest.raises(BundleError, match="the base model given has 8 blocks"):
        PuddingModel.from_pretrained(bundle, base=str(other), device="cpu", dtype="float32", cache_dir=tmp_path)


def test_eval_bundle_table_routed_row_equals_direct_scoring(routed_on, shared_data, tmp_path, device):
    routed = routed_on
    from pudding.core.tasks import DataOptions, eval_items
    from pudding.routed.evaluate import evaluate_bundle

    options = DataOptions(data_dir=str(shared_data))
    report = evaluate_bundle(
        str(routed.bundle_dir),
        ["piqa", "arc_easy"],
        options,
        limit=6,
        base=routed.lm.name,
        dtype="float32",
        outcomes_dir=tmp_path / "outcomes",
        sleb_samples=2,
        device=str(device),
        output=tmp_path / "results",
        log=lambda _: None,
    )
    rows = {kind: {"results": report["results"][name]} for name, kind in report["kinds"].items()}
    assert list(report["kinds"].values())[-5:] == ["sleb", "random", "random_in_task", "oracle", "routed"]
    assert set(report) >= {"results", "average", "omission_sets", "config", "seconds"}  # every table's shape
    assert set(report["intervals"]) == set(report["kinds"]) - {"PuDDing (router)"}  # PuDDing minus every other row
    for task in ("piqa", "arc_easy"):
        items = eval_items(task, options)[0][:6]
        assert rows["routed"]["results"][task]["acc"] == pytest.approx(routed_accuracy(routed, items))
        assert rows["oracle"]["results"][task]["acc"] >= rows["routed"]["results"][task]["acc"]
        assert sum(report["routing_histogram"][task]) == 6
    for suffix in (".json", ".md", ".csv", ".png"):
        assert (tmp_path / f"results{suffix}").is_file()


def test_quickstart_notebook_runs_on_a_tiny_configuration(routed, shared_data, tmp_path, monkeypatch, capsys):
    import json

    notebook = json.loads((Path(__file__).parents[1] / "notebooks" / "quickstart.ipynb").read_text())
    monkeypatch.setenv("PUDDING_NB_BUNDLE", str(routed.bundle_dir))
    monkeypatch.setenv("PUDDING_NB_BASE", routed.lm.name)
    monkeypatch.setenv("PUDDING_NB_DATA_DIR", str(shared_data))
    monkeypatch.setenv("PUDDING_NB_TASKS", "piqa,arc_easy")
    monkeypatch.setenv("PUDDING_NB_LIMIT", "3")
    monkeypatch.setenv("PUDDING_NB_OUTPUT", str(tmp_path / "results"))
    monkeypatch.setenv("PUDDING_NB_OUTCOMES", str(tmp_path / "outcomes"))
    monkeypatch.chdir(Path(__file__).parents[1])
    namespace: dict = {}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "quickstart.ipynb", "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert "skips blocks" in out and "PuDDing (router)" in out and "gold:" in out
    assert (tmp_path / "results.png").is_file()


def test_eval_bundle_command_checks_before_loading_and_writes_the_table(routed, shared_data, tmp_path, capsys):
    from pudding.cli import main

    common = ["compare", "--tasks", "piqa", "--limit", "3", "--data_dir", str(shared_data), "--dtype", "float32"]
    common += ["--outcomes_dir", str(tmp_path / "outcomes"), "--sleb_samples", "1", "--device", "cpu"]
    bad = [
        (["--bundle", str(tmp_path / "nowhere")], "does not exist"),
        (["--bundle", str(routed.bundle_dir), "--omit", "1,2"], "unrecognized arguments: --omit 1,2"),
        (["--bundle", str(routed.bundle_dir), "--corpus", str(tmp_path / "no.txt")], "option corpus"),
    ]
    for extra, message in bad:
        with pytest.raises(SystemExit) as exc:
            main([*common, *extra, "--output", str(tmp_path / "r.json")])
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1 and message in err[0], err
    out = tmp_path / "r.json"
    main([*common, "--bundle", str(routed.bundle_dir), "--base", routed.lm.name, "--output", str(out)])
    assert "PuDDing (router)" in capsys.readouterr().out
    assert all(out.with_suffix(s).is_file() for s in (".json", ".md", ".csv", ".png"))
    before = out.read_bytes()
    with pytest.raises(SystemExit) as exc:  # an existing result is kept unless --overwrite
        main([*common, "--bundle", str(routed.bundle_dir), "--base", routed.lm.name, "--output", str(out)])
    assert exc.value.code == 2 and "exists" in capsys.readouterr().err and out.read_bytes() == before


def test_generation_never_compiles_the_forward(routed, monkeypatch):
    """A static KV cache makes ``generate`` compile the forward (on CUDA; here forced on the CPU): a graph traced over
    one block set's layers would recompile for every other set, so routed generation and bench turn it off."""
    from transformers import CompileConfig

    from pudding.routed.bench import generate

    model = routed.lm.model
    config = copy.deepcopy(model.generation_config)
    config.cache_implementation = "static"
    config.compile_config = CompileConfig()
    config.compile_config._compile_all_devices = True  # what CUDA hardware allows by itself
    monkeypatch.setattr(model, "generation_config", config)
    compiled = []

    def refuse(*args, **kwargs):
        compiled.append(True)
        raise AssertionError("generate compiled the forward")

    monkeypatch.setattr(model, "get_compiled_call", refuse)
    with pytest.raises(AssertionError, match="compiled the forward"):  # the setting above does compile
        model.generate(**routed.lm.tokenizer(PROMPTS[:1], return_tensors="pt"), max_new_tokens=2, do_sample=False)
    compiled.clear()
    assert len(routed.generate(PROMPTS, max_new_tokens=2)) == len(PROMPTS)
    ids = routed.lm.tokenizer(PROMPTS[:1], return_tensors="pt")["input_ids"]
    assert generate(model, ids, 2, omit=routed.omission_sets[0]).shape[1] == ids.shape[1] + 2
    assert compiled == []
