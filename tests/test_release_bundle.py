"""The released router bundle: ``default`` names checkpoints/release/bundle_self, which loads and routes with no
training (PuddingModel, the lm-eval model, pudding generate, pudding compare's checks), small, and as its manifest
says."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO

from pudding.cli import main as pudding
from pudding.router.bundle import RELEASE_ENV, BundleError, resolve_bundle
from pudding.router.release import BUNDLE_MANIFEST, check_bundle_manifest, release_bundle

RELEASE = REPO / "checkpoints" / "release"
RELEASED = RELEASE / "bundle_self"
PROMPTS = [
    "Question: Which is heavier, a stone or a leaf?\nAnswer:",
    "Is the following sentence true? Water boils at 100 degrees Celsius at sea level.",
    "The river ran past the old mill and",
    "A man is sitting on a roof. He",
]
LLM = {"dtype": "float32", "device": "cpu", "cache_dir": str(REPO / "checkpoints" / "base_models")}


def test_default_names_the_released_self_bundle_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(RELEASE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # not the checkout: found beside the package, as an absolute path
    assert resolve_bundle("default") == RELEASED
    monkeypatch.chdir(REPO)  # below the working directory: relative, as it is recorded in results
    assert resolve_bundle("default") == Path("checkpoints/release/bundle_self")
    assert resolve_bundle("checkpoints/router/bundle") == Path("checkpoints/router/bundle")  # a path stays a path
    config = yaml.safe_load((RELEASED / "router.json").read_text())
    assert (config["encoder"], config["base_model"], config["num_blocks"], config["num_candidates"]) == (
        "self",
        "default",
        30,
        12,
    )
    assert config["self"]["base_model"] == "default" and config["budget"] is None
    # small enough to track in git: the head only
    size = sum(f.stat().st_size for f in RELEASED.rglob("*") if f.is_file())
    assert size < 2_000_000, size


def test_the_manifest_says_how_it_was_made_and_matches_the_files(tmp_path):
    manifest = check_bundle_manifest(RELEASED)
    released = yaml.safe_load((RELEASE / "manifest.yaml").read_text())
    assert manifest["base_model"] == "default" and manifest["base_model_file"] == released["base_model_file"]
    assert manifest["candidates"]["same_as_release"] is True
    assert manifest["candidates"]["sha256"] == released["candidates"]["sha256"]
    assert manifest["router_data"]["build_key"] == released["scores"]["build_key"]
    assert manifest["router_data"]["dtype"] == "float32" and manifest["router"]["features_dtype"] == "float32"
    step = manifest["produced_by"][-1]  # the fit
    assert "--model.encoder self" in step["command"] and step["seconds"] > 0 and "amx" in step["machine"].lower()
    assert set(manifest["written_on"]) >= {"cpu", "amx_bf16"}
    fit = manifest["fit"]
    assert fit["epoch"] < fit["epochs"] == 20
    assert 0 < fit["validation"]["regret"] < fit["references"]["val_regret_best_static"]
    assert set(manifest["files"]) >= {"router.json", "router.safetensors", "candidates.yaml", "encoder/config.json"}
    # a changed file is caught, naming it
    copy = tmp_path / "bundle"
    shutil.copytree(RELEASED, copy)
    (copy / "candidates.yaml").write_text((copy / "candidates.yaml").read_text() + "\n# edited\n")
    with pytest.raises(BundleError, match="candidates.yaml: sha256 differs"):
        check_bundle_manifest(copy)


def test_release_bundle_copies_a_bundle_and_lists_its_files(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(RELEASED, source)
    (source / BUNDLE_MANIFEST).unlink()
    step = {"command": "pudding-train fit ...", "seconds": 1.5, "machine": "test"}
    manifest = release_bundle(source, tmp_path / "out", [step], release=RELEASE)
    assert manifest["files"] == yaml.safe_load((RELEASED / BUNDLE_MANIFEST).read_text())["files"]
    assert manifest["candidates"]["same_as_release"] and manifest["produced_by"] == [step]
    check_bundle_manifest(tmp_path / "out")
    with pytest.raises(Exception, match="exists; pass --overwrite true"):
        release_bundle(source, tmp_path / "out", [step], release=RELEASE)
    with pytest.raises(Exception, match="produced_by"):
        release_bundle(source, tmp_path / "out2", [{"command": "x"}], release=RELEASE)


def test_release_folder_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(RELEASE_ENV, str(tmp_path))
    with pytest.raises(BundleError, match=f"router bundle 'default'.*not in {tmp_path}/bundle_self.*{RELEASE_ENV}"):
        resolve_bundle("default")
    shutil.copytree(RELEASED, tmp_path / "bundle_self")
    assert resolve_bundle("default") == tmp_path / "bundle_self"


def test_a_bad_bundle_name_is_one_line(capsys):
    for argv in (["generate", "--bundle", "nope", "Hello"], ["compare", "--bundle", "nope"]):
        with pytest.raises(SystemExit) as exc:
            pudding(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1, err
        assert f"pudding {argv[0]}: error: router bundle nope does not exist" in err
    with pytest.raises(SystemExit) as exc:
        pudding(["generate", "--max_new_tokens", "4"])
    assert exc.value.code == 2 and "give a prompt: pudding generate" in capsys.readouterr().err


def test_compare_takes_the_default_bundle():
    """``pudding compare --bundle default`` passes every check made before a model loads (and lm-eval's
    ``bundle=default`` goes through the same resolution, PuddingModel.from_pretrained)."""
    from pudding.cli.compare import CompareOptions
    from pudding.routed.evaluate import check_bundle_inputs

    opts = CompareOptions(bundle="default", **{k: v for k, v in LLM.items() if k != "device"})
    assert check_bundle_inputs(opts.bundle, opts) == "default"


@pytest.mark.slow
def test_the_released_bundle_loads_and_routes(capsys):
    from pudding.integrations.lmeval import PuddingLM
    from pudding.routed.model import PuddingModel

    model = PuddingModel.from_pretrained("default", **LLM)
    assert model.is_self and model.bundle_dir == resolve_bundle("default")
    assert model.candidate_names == yaml.safe_load((RELEASE / "manifest.yaml").read_text())["candidates"]["names"]
    preds = model.router.predict_texts(PROMPTS)
    assert preds.shape == (len(PROMPTS), 12) and torch.isfinite(preds).all()
    chosen = model.route(PROMPTS)
    assert chosen == preds.argmax(dim=1).tolist()
    assert len(set(chosen)) > 1, chosen  # it routes: not one set for every prompt
    texts = model.generate(PROMPTS[:2], max_new_tokens=4)
    assert model.last_choices == chosen[:2] and all(t.strip() for t in texts)
    # lm-eval's model_args=bundle=default
    lm = PuddingLM.create_from_arg_string("bundle=default,dtype=float32,device=cpu")
    assert lm.model.route(PROMPTS) == chosen

    # pudding generate: the chosen set on one line, then the text
    pudding(["generate", "--dtype", "float32", "--device", "cpu", "--max_new_tokens", "4", PROMPTS[0]])
    lines = capsys.readouterr().out.strip().splitlines()
    name = model.candidate_names[chosen[0]]
    omitted = ",".join(map(str, model.omission_sets[chosen[0]]))
    assert lines[0] == f"[{name}] omits {omitted}: 23 of 30 blocks kept", lines
    assert "\n".join(lines[1:]).strip() == texts[0].strip()
    assert re.fullmatch(r"\[\w+/\w+\] omits (\d+,){6}\d+: 23 of 30 blocks kept", lines[0])
