"""``make gpu-check DEVICE=cpu``: the device check's whole flow on the CPU passes every check and writes a full JSON;
a failed step fails the check (exit status 1) and skips what needs it."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402

STEPS = ["setup", "candidates", "dataset", "fit_text", "fit_self", "eval_bundle", "bench", "lm_eval"]
TOP = {"device", "device_name", "dtype", "dtype_requested", "dtype_reason", "torch", "cuda", "transformers"}
TOP |= {"lightning", "lm_eval", "python", "machine", "ok", "seconds", "budget_seconds", "within_budget", "sizes"}
TOP |= {"command", "steps"}


@pytest.fixture(scope="module")
def cpu_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_check")
    output = root / "cpu.json"
    status = gpu_check.main(["--device", "cpu", "--output", str(output), "--work_dir", str(root / "work")])
    return status, json.loads(output.read_text())


def test_the_whole_flow_passes_on_the_cpu_and_the_json_is_complete(cpu_report):
    status, report = cpu_report
    failed = {s["name"]: s["error"] for s in report["steps"] if not s["ok"]}
    assert status == 0 and report["ok"] and not failed, failed
    assert set(report) == TOP and report["device"] == "cpu" and report["torch"] == torch.__version__
    assert report["dtype"] in ("float32", "bfloat16") and report["dtype_requested"] == "auto"
    assert [s["name"] for s in report["steps"]] == STEPS
    for step in report["steps"]:
        assert set(step) >= {"name", "ok", "seconds", "error", "checks", "details"} and step["error"] is None
        assert step["seconds"] > 0 and step["checks"] and all(step["checks"].values()), step
    steps = {s["name"]: s for s in report["steps"]}
    assert max(steps["setup"]["details"]["files_bytes"].values()) < 5 * 2**20  # nothing over a few MB
    assert steps["dataset"]["details"]["rows"] == sum(steps["dataset"]["details"]["rows_per_task"].values()) > 0
    for kind in ("text", "self"):
        got = steps["lm_eval"]["details"][kind]
        assert abs(got["lm_eval_acc"] - got["compare_routed_acc"]) <= got["allowed_difference"]
        assert 0 <= steps["eval_bundle"]["details"][kind]["routed"] <= steps["eval_bundle"]["details"][kind]["oracle"]
        assert all(r > 0 for r in steps["bench"]["details"][kind]["ratio_routed_vs_dense"])


def test_a_failed_step_fails_the_check_and_skips_what_needs_it(tmp_path, monkeypatch, capsys):
    def broken(flow, step):
        step.expect("the tiny model was made", False)

    monkeypatch.setattr(gpu_check, "setup", broken)
    output = tmp_path / "cpu.json"
    assert gpu_check.main(["--device", "cpu", "--output", str(output), "--work_dir", str(tmp_path / "w")]) == 1
    report = json.loads(output.read_text())
    assert not report["ok"] and [s["name"] for s in report["steps"]] == STEPS
    first, *rest = report["steps"]
    assert first["error"] == "check failed: the tiny model was made" and first["checks"] == {
        "the tiny model was made": False
    }
    assert rest[0]["error"] == "skipped: needs setup, which did not pass"
    assert all(not s["ok"] and s["error"].startswith("skipped: needs") for s in rest)
    assert "FAILED" in capsys.readouterr().out

    def raising(flow, step):
        raise RuntimeError("boom")

    monkeypatch.setattr(gpu_check, "setup", raising)
    output = tmp_path / "again.json"
    assert gpu_check.main(["--device", "cpu", "--output", str(output), "--work_dir", str(tmp_path / "w2")]) == 1
    (first, *_) = json.loads(output.read_text())["steps"]
    assert first["error"] == "RuntimeError: boom" and "raise RuntimeError" in "\n".join(first["traceback"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the cuda check runs")
def test_cuda_without_a_cuda_device_is_refused_in_one_line(tmp_path, capsys):
    assert gpu_check.main(["--device", "cuda", "--output", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "torch sees no CUDA device" in err[0] and not (tmp_path / "x.json").exists()
