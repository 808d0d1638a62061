"""``pudding candidates``: greedy search for the candidate omission sets a PuDDing router chooses among.

    pudding candidates --config configs/candidates.yaml --data_dir ../shared/data --num_omit 5

runs one SLEB-style greedy search per (task, loss), each on a seeded sample of the task's router items (never an
evaluation item), merges identical results and writes one YAML candidate file. Finished runs are kept in
``work_dir``; running the same command again after an interruption resumes and writes the same file. The options
are the fields of :class:`pudding.search.SearchOptions`.
"""

from __future__ import annotations

from pudding.cli.parse import parse_options
from pudding.cli.report import run_command
from pudding.search.runs import SearchOptions, run_search


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``pudding candidates`` (``--help`` lists every option; ``--config FILE`` reads YAML)."""
    run_command(
        "pudding candidates", lambda args: run_search(parse_options(SearchOptions, args, "pudding candidates")), argv
    )


if __name__ == "__main__":
    main()
