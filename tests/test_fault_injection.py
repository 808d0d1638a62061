"""One SIGKILL-and-rerun cycle of each long job, as real subprocesses: the rerun ends equal to an uninterrupted run.

The jobs, tiny configurations and what "equal" means are those of ``benchmarks/fault_injection.py`` (which kills
each job several times in a row); here each job is killed once, at a seeded point inside its uninterrupted run's
duration, then rerun to the end. Needs the real benchmark files (a few items) beside the checkout.
"""

from __future__ import annotations

import random
import sys

import pytest
import yaml
from conftest import REPO, tiny_dataset

sys.path.insert(0, str(REPO / "benchmarks"))
import fault_injection as fi  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("faults")
    found = fi.prepare(root, size="test")
    found["root"] = root
    return found


def cycle(job, inputs, tmp_path, **extra):
    result = fi.run_job(job, tmp_path, {**inputs, **extra}, kills=1, rng=random.Random(0), min_s=4.0, size="test")
    assert result["equal"], result
    assert result["leftovers"] == []
    return result


def test_candidate_search_killed_and_rerun_writes_the_same_file(inputs, tmp_path):
    result = cycle("candidates", inputs, tmp_path)
    assert result["bytes"] > 0


def test_dataset_build_killed_and_rerun_has_the_same_scores(inputs, tmp_path):
    cands = tmp_path / "candidates.yaml"
    sets = [[1, 2], [3, 4], [2, 5]]
    entries = [{"omit": s, "task": "piqa", "loss": f"l{i}"} for i, s in enumerate(sets)]
    llm = str(inputs["llm"])
    cands.write_text(yaml.safe_dump({"base_model": llm, "num_blocks": 6, "num_omit": 2, "candidates": entries}))
    result = cycle("dataset", inputs, tmp_path, candidates=cands)
    assert result["rows"] == 32  # 16 items of each of two tasks


def test_router_training_killed_and_resumed_with_ckpt_path_last_ends_with_the_same_weights(inputs, tmp_path):
    dataset = tiny_dataset(tmp_path / "data")
    result = cycle("train", inputs, tmp_path, dataset=dataset)
    assert result["global_step"] > 0  # ckpt "epoch" counts finished epochs at save time
