"""Device check: the whole PuDDing flow on a tiny model this script makes, on one device, as one JSON of checks.

    python benchmarks/gpu_check.py --device cuda --output benchmarks/results/gpu_check/cuda.json   # make gpu-check
    python benchmarks/gpu_check.py --device cpu --output /tmp/cpu.json        # make gpu-check DEVICE=cpu (and a test)

Nothing is downloaded and no model package is needed: the script trains a byte-level BPE tokenizer and a WordPiece
tokenizer on invented task files (``support.tiny.write_tiny_tasks``: ARC-Easy, BoolQ and PIQA in the
``../shared/data`` layout), saves a random 6-block Llama (64 wide, ~1 MB) and a random 2-layer BERT router encoder
(32 wide) beside them, and runs every stage through its real entry point (in this process, with ``--debug`` so an
error keeps its exception), on ``--device``:

``candidates`` (``pudding candidates``: 3 tasks × 2 losses, 2 of 6 blocks), ``dataset`` (``pudding dataset``, a
Lightning predict run on the device), ``fit_text`` and ``fit_self`` (``pudding-train fit``: the text router on the
tiny BERT, and the ``self`` router on the LLM's first block), ``eval_bundle`` (``pudding compare --bundle``, both
bundles: the routed table against every baseline), ``bench`` (``pudding bench``, both bundles) and ``lm_eval``
(lm-eval's own ``piqa`` task run by ``lm_eval.simple_evaluate`` on the model ``pudding`` from lm-eval's registry,
both bundles; in float32 its accuracy must equal ``eval_bundle``'s routed row on the same items). ``--pytest``
(``make gpu-check`` gives it on CUDA) adds ``device_tests``: the device's variants of the engine, omission, routed,
self-router and bench tests.

Each step records ok, seconds, its error (exception and traceback tail), the checks it made (beyond "it ran": the
device and dtype each output records, row counts, finite scores, oracle ≥ routed, ...) and, on CUDA, its peak GPU
memory. A step whose inputs failed is reported as skipped (not ok). The JSON also holds the device's name, torch,
CUDA and package versions and the dtype (``--dtype auto``: bfloat16 on a GPU with native bfloat16). The exit status
is 1 when any step is not ok. Everything is written under ``--work_dir`` (default: a temporary folder, removed),
run from inside it, so no default output path of a command can reach the checkout's results.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # this checkout's pudding; the test helpers (tests/support) too
for _name, _value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false")):
    os.environ.setdefault(_name, _value)

TASKS = ("arc_easy", "boolq", "piqa")
ITEMS = 24
"""ARC-Easy: this many train and test items; BoolQ and PIQA: twice as many validation items, half for the router."""
LIMIT = 8
"""Evaluation items per task for ``eval_bundle`` and ``lm_eval``."""
NUM_BLOCKS, HIDDEN, VOCAB = 6, 64, 512
BUDGET_S = 480
"""The issue's bound for the whole check on one GPU (recorded, not enforced: a CPU takes what it takes)."""
DEVICE_TESTS = ("test_scoring.py", "test_omission.py", "test_routed_model.py", "test_self_router.py", "test_bench.py")
ACC_TOLERANCE = {"float32": 0.0, "bfloat16/float16": 0.25}
"""Largest |lm-eval acc - compare's routed acc| allowed: none in float32; in bfloat16/float16 the two paths batch the
requests differently, and a random model's near-ties between choices can flip by rounding (2 of 8 items)."""


class Step:
    """One step's record: its checks and details, filled while it runs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.checks: dict[str, bool] = {}
        self.details: dict = {}

    def expect(self, what: str, holds: bool) -> None:
        self.checks[what] = bool(holds)


class Flow:
    """The tiny inputs, the step outputs and the records of one check run."""

    def __init__(self, device: str, dtype: str, root: Path) -> None:
        from pudding.core.models.dtype import choose_dtype

        self.device, self.dtype, self.root = device, dtype, root
        self.choice = choose_dtype(dtype, device, announce=False)
        self.records: list[dict] = []
        self.done: set[str] = set()
        self.paths: dict[str, Path] = {}

    # ------------------------------------------------------------------ running steps
    def run(self, name: str, fn: Callable[[Step], None], needs: tuple[str, ...] = ()) -> None:
        """Run one step, record it (ok only when it raised nothing and every check held)."""
        step = Step(name)
        missing = [n for n in needs if n not in self.done]
        record: dict = {"name": name, "ok": False, "seconds": 0.0, "cpu_seconds": 0.0, "error": None}
        if missing:
            record.update(error=f"skipped: needs {', '.join(missing)}, which did not pass", checks={}, details={})
            self.records.append(record)
            print(f"[gpu-check] {name}: {record['error']}", flush=True)
            return
        self._reset_peak()
        started, cpu = time.perf_counter(), time.process_time()
        try:
            fn(step)
        except (Exception, SystemExit) as exc:  # a CLI's SystemExit is a failure of the step, not of the check
            record["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
            record["traceback"] = traceback.format_exc().splitlines()[-25:]
        record["seconds"] = round(time.perf_counter() - started, 2)
        record["cpu_seconds"] = round(time.process_time() - cpu, 2)  # this process's threads: wall time less the load
        failed = [what for what, holds in step.checks.items() if not holds]
        if failed and record["error"] is None:
            record["error"] = f"check failed: {'; '.join(failed)}"
        record["ok"] = record["error"] is None
        record["checks"] = step.checks
        record["details"] = step.details
        if self.device == "cuda":
            import torch

            record["peak_cuda_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        self.records.append(record)
        if record["ok"]:
            self.done.add(name)
        state = "ok" if record["ok"] else f"FAILED ({record['error']})"
        print(f"[gpu-check] {name}: {state} in {record['seconds']:.1f} s", flush=True)

    def _reset_peak(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()

    # ------------------------------------------------------------------ shared bits
    def llm_flags(self, prefix: str = "--", device: bool = True) -> list[str]:
        """The base-LLM options (``prefix``: ``--data.llm.`` in ``pudding-train``) for the tiny model on the device;
        without ``device`` where a Lightning trainer places the model."""
        values = {"device": self.device, "dtype": self.dtype, "cache_dir": str(self.root / "models")}
        return [word for name, value in values.items() if device or name != "device" for word in (prefix + name, value)]

    @property
    def accelerator(self) -> str:
        return "gpu" if self.device == "cuda" else "cpu"

    def expect_dtype(self, step: Step, record: dict, where: str) -> None:
        step.expect(f"{where} records dtype {self.choice.name}", record.get("dtype") == self.choice.name)

    def expect_device(self, step: Step, recorded: str | None, where: str) -> None:
        step.expect(f"{where} records device {self.device}", str(recorded).split(":")[0] == self.device)


# ---------------------------------------------------------------------------------------------- the steps
def setup(flow: Flow, step: Step) -> None:
    """Invented task files, two self-made tokenizers trained on them, the tiny LLM and router encoder."""
    from support.tiny import save_tiny_bert_tokenizer, save_tiny_encoder, save_tiny_llm, save_tiny_tokenizer, sentence

    data = write_tasks(flow.root / "data")
    texts = [line for path in sorted(data.rglob("*.jsonl")) for line in path.read_text().splitlines()]
    texts += ["Question: Answer: yes no -- ?", *(sentence(random.Random(i), 1, 9) for i in range(64))]
    tokenizer = save_tiny_tokenizer(flow.root / "llm_tokenizer", texts, vocab_size=VOCAB)
    llm = save_tiny_llm(flow.root / "llm", tokenizer, num_layers=NUM_BLOCKS, hidden=HIDDEN)
    bert = save_tiny_bert_tokenizer(flow.root / "encoder_tokenizer", texts, vocab_size=VOCAB)
    encoder = save_tiny_encoder(flow.root / "encoder", tokenizer=bert)
    flow.paths.update(data=data, llm=llm, encoder=encoder)
    sizes = {p.relative_to(flow.root).as_posix(): p.stat().st_size for d in (llm, encoder) for p in d.iterdir()}
    step.details.update(files_bytes=sizes, llm_vocab=len(tokenizer), encoder_vocab=len(bert))
    step.expect("every model file under 5 MB", max(sizes.values()) < 5 * 2**20)
    step.expect("the LLM tokenizer round-trips text", tokenizer.decode(tokenizer.encode(texts[0])) == texts[0])


def write_tasks(root: Path) -> Path:
    from support.tiny import write_tiny_tasks

    return write_tiny_tasks(root, n=ITEMS, tasks=TASKS)


def candidates(flow: Flow, step: Step) -> None:
    from pudding.cli import main as pudding
    from pudding.core.candidates import load_candidates

    out = flow.root / "candidates.yaml"
    args = ["candidates", "--base", str(flow.paths["llm"]), *flow.llm_flags(), "--data_dir", str(flow.paths["data"])]
    args += ["--tasks", ",".join(TASKS), "--losses", "likelihood,margin", "--num_omit", "2", "--num_samples", "4"]
    pudding([*args, "--output", str(out), "--debug"])
    cset = load_candidates(out)
    flow.paths["candidates"] = out
    step.details.update(candidates=[list(s) for s in cset.omission_sets], num_blocks=cset.num_blocks)
    step.expect("at least one candidate", len(cset) >= 1)
    step.expect(
        "each candidate omits 2 blocks, never the first or last",
        all(len(s) == 2 and 0 not in s and NUM_BLOCKS - 1 not in s for s in cset.omission_sets),
    )
    flow.expect_dtype(step, cset.search, "the candidate file")


def dataset(flow: Flow, step: Step) -> None:
    from pudding.cli import main as pudding
    from pudding.core.tasks import DataOptions, router_items
    from pudding.routerdata.dataset import load_router_dataset

    out = flow.root / "router_dataset"
    # the trainer's accelerator places the model (the option device must stay auto)
    args = ["dataset", "--candidates", str(flow.paths["candidates"]), *flow.llm_flags(device=False)]
    args += ["--data_dir", str(flow.paths["data"]), "--tasks", ",".join(TASKS), "--items_per_batch", "16"]
    args += ["--progress_every", "-1", "--trainer.accelerator", flow.accelerator, "--output", str(out), "--debug"]
    pudding(args)
    table, meta = load_router_dataset(out)
    flow.paths["dataset"] = out
    expected = sum(len(router_items(t, DataOptions(data_dir=str(flow.paths["data"])))[0]) for t in TASKS)
    scores = [s for row in table["scores"] for s in row] + list(table["dense_score"])
    step.details.update(rows=len(table), rows_per_task=meta.get("rows_per_task"))
    step.expect("one row per router item", len(table) == expected)
    step.expect("every score finite and below 0", all(math.isfinite(s) and s < 0 for s in scores))
    flow.expect_device(step, meta.get("device_type"), "the dataset")
    flow.expect_dtype(step, meta, "the dataset")


def fit(kind: str) -> Callable[[Flow, Step], None]:
    """``pudding-train fit`` of the text router (tiny BERT) or the ``self`` router, two epochs, on the device."""

    def run(flow: Flow, step: Step) -> None:
        from pudding.cli.train import main as train
        from pudding.router.bundle import load_bundle

        bundle = flow.root / f"bundle_{kind}"
        args = ["fit", "--data.datasets", f"[{flow.paths['dataset']}]", "--data.batch_size", "8"]
        args += ["--trainer.max_epochs", "2", "--trainer.accelerator", flow.accelerator, "--trainer.devices", "1"]
        args += ["--trainer.logger.init_args.save_dir", str(flow.root / f"router_{kind}")]
        args += ["--model.warmup_steps", "2", "--model.max_length", "64"]
        if kind == "text":
            args += ["--model.encoder", str(flow.paths["encoder"])]
        else:
            args += ["--model.encoder", "self", "--model.pooling", "mean_last", "--model.lr", "1e-3"]
            args += flow.llm_flags("--data.llm.")
        train([*args, "--bundle", str(bundle), "--debug"])
        router, info = load_bundle(bundle, base_num_blocks=NUM_BLOCKS)
        flow.paths[f"bundle_{kind}"] = bundle
        encoder, best = info.get("encoder"), info.get("checkpoint")
        step.details.update(encoder=encoder and Path(encoder).name, best_checkpoint=best and Path(best).name)
        step.expect(
            "the bundle routes prompts to its candidates",
            all(
                0 <= c < len(router.omission_sets) for c in router.route_texts(["Question: a dog?\nAnswer:", "the sun"])
            ),
        )

    return run


def eval_bundle(flow: Flow, step: Step) -> None:
    from pudding.cli import main as pudding

    for kind in ("text", "self"):
        out = flow.root / "eval" / f"routed_{kind}.json"
        args = ["compare", "--bundle", str(flow.paths[f"bundle_{kind}"]), "--base", str(flow.paths["llm"])]
        args += [*flow.llm_flags(), "--data_dir", str(flow.paths["data"]), "--tasks", ",".join(TASKS)]
        args += ["--limit", str(LIMIT), "--sleb_samples", "2", "--outcomes_dir", str(flow.root / "outcomes")]
        pudding([*args, "--output", str(out), "--debug"])
        report = json.loads(out.read_text())
        routed = next(name for name, k in report["kinds"].items() if k == "routed")
        oracle = next(name for name, k in report["kinds"].items() if k == "oracle")
        rows = report["results"]
        flow.paths[f"eval_{kind}"] = out
        average = report["average"]
        step.details[kind] = {"routed": average[routed], "oracle": average[oracle], "dense": average.get("dense")}
        step.expect(f"{kind}: {LIMIT} items per task", all(rows[routed][t]["n"] == LIMIT for t in TASKS))
        step.expect(
            f"{kind}: oracle >= routed on every task",
            all(rows[oracle][t]["acc"] >= rows[routed][t]["acc"] for t in TASKS),
        )
        flow.expect_device(step, report["config"].get("device"), f"{kind}: the table")
        flow.expect_dtype(step, report["config"], f"{kind}: the table")
        step.expect(
            f"{kind}: .md, .csv and .png beside it", all(out.with_suffix(s).is_file() for s in (".md", ".csv", ".png"))
        )


def bench(flow: Flow, step: Step) -> None:
    from pudding.cli import main as pudding

    for kind in ("text", "self"):
        out = flow.root / "bench" / f"{kind}.json"
        args = ["bench", "--bundle", str(flow.paths[f"bundle_{kind}"]), "--base", str(flow.paths["llm"])]
        args += [*flow.llm_flags(), "--lengths", "16,32", "--repeats", "2", "--warmup", "1", "--new_tokens", "4"]
        pudding([*args, "--output", str(out), "--debug"])
        report = json.loads(out.read_text())
        rows = report["lengths"]
        step.details[kind] = {
            "ratio_routed_vs_dense": [r["ratio_routed_vs_dense"] for r in rows],
            "dense_prefill_ms": [r["dense_prefill"]["median_ms"] for r in rows],
            "peak_memory_mb": report["peak_memory_mb"],
        }
        step.expect(f"{kind}: one row per length", [r["tokens"] for r in rows] == [16, 32])
        step.expect(
            f"{kind}: positive timings and generation speed",
            all(
                r["dense_prefill"]["median_ms"] > 0
                and r["routed_prefill"]["median_ms"] > 0
                and r["routed_generate_tokens_per_s"] > 0
                for r in rows
            ),
        )
        flow.expect_device(step, report.get("device"), f"{kind}: the bench")
        flow.expect_dtype(step, report, f"{kind}: the bench")


def lm_eval(flow: Flow, step: Step) -> None:
    """lm-eval's own piqa task (its YAML, data swapped for the invented files) on the registered model ``pudding``."""
    import lm_eval as lmeval
    import lm_eval.api.registry as registry
    from support import lmeval_bridge

    import pudding  # noqa: F401  (registers the lm-eval model)
    from pudding.core.tasks import DataOptions, eval_items

    items = eval_items("piqa", DataOptions(data_dir=str(flow.paths["data"])))[0][:LIMIT]
    records = lmeval_bridge.records_for_items("piqa", items, flow.paths["data"])
    tasks_dir = flow.root / "lm_eval_tasks"
    lmeval_bridge.write_local_task("piqa", records, tasks_dir)
    manager = lmeval_bridge.task_manager(tasks_dir)
    limit = ACC_TOLERANCE["float32" if flow.choice.name == "float32" else "bfloat16/float16"]
    for kind in ("text", "self"):
        arguments = [f"bundle={flow.paths[f'bundle_{kind}']}", f"base={flow.paths['llm']}"]
        arguments += [f"device={flow.device}", f"dtype={flow.dtype}", f"cache_dir={flow.root / 'models'}"]
        lm = registry.get_model("pudding").create_from_arg_string(",".join(arguments))
        results = lmeval.simple_evaluate(
            model=lm,
            tasks=[lmeval_bridge.lmeval_task_name("piqa")],
            task_manager=manager,
            bootstrap_iters=0,
            log_samples=True,
        )
        theirs = lmeval_bridge.task_result(results, "piqa")
        report = json.loads(flow.paths[f"eval_{kind}"].read_text())
        routed = next(name for name, k in report["kinds"].items() if k == "routed")
        ours = report["results"][routed]["piqa"]["acc"]
        step.details[kind] = {"lm_eval_acc": theirs["acc"], "compare_routed_acc": ours, "allowed_difference": limit}
        step.expect(f"{kind}: lm-eval evaluated the {LIMIT} items", theirs["n"] == LIMIT)
        step.expect(
            f"{kind}: lm-eval's acc = compare's routed acc (within {limit})", abs(theirs["acc"] - ours) <= limit
        )
        step.expect(
            f"{kind}: lm-eval built pudding's requests", lmeval_bridge.check_same_requests(results, "piqa", items) == []
        )
        flow.expect_device(step, str(lm.model.lm.device), f"{kind}: the lm-eval model")


def device_tests(flow: Flow, step: Step) -> None:
    """The device variants of the engine, omission, routed, self-router and bench tests (pytest ``-k <device>``)."""
    files = [str(REPO / "tests" / name) for name in DEVICE_TESTS]
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-k", flow.device, *files]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error|errors)", summary)}
    step.details.update(command=" ".join(cmd[1:]), summary=summary, counts=counts)
    if proc.returncode != 0:
        step.details["output_tail"] = (proc.stdout + proc.stderr).splitlines()[-40:]
    step.expect("pytest exits 0", proc.returncode == 0)
    step.expect("some device variants ran", counts.get("passed", 0) > 0)


# ---------------------------------------------------------------------------------------------- the report
@contextlib.contextmanager
def working_dir(path: Path):
    """Run inside ``path`` (``contextlib.chdir`` is Python 3.11+)."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(before)


def environment(flow: Flow) -> dict:
    import lightning
    import lm_eval as lmeval
    import torch
    import transformers

    from pudding.core.models.dtype import machine

    host = machine()
    info = {
        "device": flow.device,
        "device_name": host.get("gpu") if flow.device == "cuda" else host.get("cpu") or platform.machine(),
        "dtype": flow.choice.name,
        "dtype_requested": flow.dtype,
        "dtype_reason": flow.choice.reason,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "lightning": lightning.__version__,
        "lm_eval": lmeval.__version__,
        "python": platform.python_version(),
        "machine": host,
    }
    if flow.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu_memory_gb=round(props.total_memory / 2**30, 1), gpus_visible=torch.cuda.device_count())
    return info


def check(device: str, dtype: str, root: Path, pytest_variants: bool = False) -> dict:
    """Every step on ``device`` under ``root`` (made the working directory meanwhile); the report."""
    flow = Flow(device, dtype, root)
    started = time.perf_counter()
    with working_dir(root):
        flow.run("setup", lambda s: setup(flow, s))
        flow.run("candidates", lambda s: candidates(flow, s), needs=("setup",))
        flow.run("dataset", lambda s: dataset(flow, s), needs=("candidates",))
        flow.run("fit_text", lambda s: fit("text")(flow, s), needs=("dataset",))
        flow.run("fit_self", lambda s: fit("self")(flow, s), needs=("dataset",))
        flow.run("eval_bundle", lambda s: eval_bundle(flow, s), needs=("fit_text", "fit_self"))
        flow.run("bench", lambda s: bench(flow, s), needs=("fit_text", "fit_self"))
        flow.run("lm_eval", lambda s: lm_eval(flow, s), needs=("eval_bundle",))
    if pytest_variants:
        flow.run("device_tests", lambda s: device_tests(flow, s))
    total = round(time.perf_counter() - started, 1)
    return {
        **environment(flow),
        "ok": all(r["ok"] for r in flow.records),
        "seconds": total,
        "budget_seconds": BUDGET_S,
        "within_budget": total <= BUDGET_S,
        "sizes": {"tasks": list(TASKS), "items": ITEMS, "eval_limit": LIMIT, "llm": [NUM_BLOCKS, HIDDEN, VOCAB]},
        "command": " ".join(["python", "benchmarks/gpu_check.py", *sys.argv[1:]]),
        "steps": flow.records,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="where every step runs")
    parser.add_argument("--dtype", default="auto", help="auto (default), float32, bfloat16 or float16")
    parser.add_argument(
        "--output", default=None, help="the JSON report (default: benchmarks/results/gpu_check/<device>.json)"
    )
    parser.add_argument("--work_dir", default=None, help="work here and keep it (default: a temporary folder)")
    parser.add_argument("--pytest", action="store_true", help="also run the device variants of the device tests")
    opts = parser.parse_args(argv)
    import torch

    from pudding.core.io import atomic_write_json

    output = Path(opts.output or REPO / "benchmarks" / "results" / "gpu_check" / f"{opts.device}.json").resolve()
    if opts.device == "cuda" and not torch.cuda.is_available():
        print(
            "gpu-check: error: --device cuda, but torch sees no CUDA device (make gpu-check DEVICE=cpu runs the "
            "same flow on the CPU)",
            file=sys.stderr,
        )
        return 2
    with contextlib.ExitStack() as stack:
        if opts.work_dir:
            root = Path(opts.work_dir).resolve()
            root.mkdir(parents=True, exist_ok=False)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pudding-gpu-check-")))
        report = check(opts.device, opts.dtype, root, opts.pytest)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output, report)
    width = max(len(r["name"]) for r in report["steps"])
    for r in report["steps"]:
        print(f"{r['name']:<{width}}  {'ok' if r['ok'] else 'FAILED'}  {r['seconds']:>7.1f} s  {r['error'] or ''}")
    print(
        f"gpu-check on {report['device_name']} ({report['dtype']}): {'ok' if report['ok'] else 'FAILED'} in "
        f"{report['seconds']:.0f} s; wrote {output}"
    )
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
