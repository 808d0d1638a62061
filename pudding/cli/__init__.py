"""The command layer: ``pudding <command>`` (one module per command here) and ``pudding-train`` (:mod:`.train`).

Each command's options are one dataclass inheriting the option groups it needs (:class:`pudding.core.llm.LLMOptions`,
:class:`pudding.core.tasks.TaskOptions`, :class:`pudding.core.io.OutputOptions`, a stage's own settings) and checks
itself on construction; :func:`pudding.cli.parse.parse_options` builds it with jsonargparse, so ``pudding <command>
--help`` lists every option flat with its default and docstring, and ``--config FILE.yaml`` (flat keys) plus
command-line overrides work the same everywhere. Each command's ``main`` runs through
:func:`pudding.cli.report.run_command`: a bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "candidates": ("pudding.cli.candidates", "greedy search for candidate omission sets (PuDDing stage 1)"),
    "dataset": ("pudding.cli.dataset", "per-prompt score vectors over the candidates (router data, stage 2)"),
    "eval": ("pudding.cli.eval", "zero-shot accuracy of a base model, dense or with blocks omitted"),
    "compare": ("pudding.cli.compare", "a router bundle's routed accuracy against every baseline, in one table"),
    "curve": ("pudding.cli.curve", "a router bundle's accuracy against blocks kept, across compute budgets"),
    "bench": ("pudding.cli.bench", "pre-fill and generation speed, dense vs routed by a router bundle"),
    "generate": ("pudding.cli.generate", "route a prompt, print the chosen set and the generated text"),
    "release": ("pudding.cli.release", "package candidates and router scores as a release folder"),
}


def usage() -> str:
    lines = ["usage: pudding <command> [options]   (pudding <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<11} {text}" for name, (_, text) in COMMANDS.items()]
    lines += [
        "",
        "A bad input prints one line, 'pudding <command>: error: ...', and exits with code 2;",
        "--debug (or PUDDING_DEBUG=1) shows the traceback instead.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"pudding: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        raise SystemExit(2)
    importlib.import_module(COMMANDS[name][0]).main(rest)


if __name__ == "__main__":
    main()
