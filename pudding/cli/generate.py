"""``pudding generate``: a first try from the shell: route a prompt, print the chosen set, then the generated text.

    pudding generate "Why is the sky blue?"
    pudding generate --bundle checkpoints/router/bundle --max_new_tokens 80 --dtype float32 "PROMPT" "ANOTHER PROMPT"

For each prompt, one line names the chosen candidate and its omission set (``[piqa/likelihood] omits 2,6,15,19,24,26,28:
23 of 30 blocks kept``), then the continuation (greedy, new text only) follows. The bundle defaults to ``default``, the
released ``self`` router of the default base model, so this works right after ``make setup`` with no training.
Generation is :meth:`pudding.routed.model.PuddingModel.generate`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from pudding.cli.parse import build_options, options_parser
from pudding.cli.report import run_command
from pudding.core.errors import OptionError
from pudding.core.llm import LLMOptions
from pudding.core.options import check_positive
from pudding.router.budget import parse_budget
from pudding.router.bundle import DEFAULT_BUNDLE, check_bundle

PROG = "pudding generate"


@dataclass
class GenerateOptions(LLMOptions):
    """Route each prompt with a router bundle, then continue it with the chosen blocks skipped.

    Args:
        base: Base model; null: the one the bundle was trained for. Another model must have the same number of
            blocks.
        bundle: Router bundle folder; ``default``: the released one (``checkpoints/release/bundle_self``, the
            default model's ``self`` router).
        max_new_tokens: Tokens to generate per prompt (greedy).
        budget: Compute budget, the target mean fraction of blocks kept in (0, 1]; null: the bundle's default (plain
            argmax unless it records one); ``argmax``: plain argmax. Needs a bundle whose choices differ in depth.
    """

    bundle: str = DEFAULT_BUNDLE
    max_new_tokens: int = 40
    budget: float | str | None = None

    def check(self) -> None:
        check_positive(self.max_new_tokens, "max_new_tokens")
        self.budget = parse_budget(self.budget)


def parse_generate(argv: list[str]) -> tuple[GenerateOptions, list[str]]:
    """The options and the prompts (positional, one or more) of a ``pudding generate`` command line."""
    parser = options_parser(GenerateOptions, PROG)
    parser.add_argument("prompts", nargs="*", help="the prompts, each quoted (at least one)")
    cfg = parser.parse_args(list(argv))
    prompts = [str(p) for p in cfg.prompts or []]
    if not prompts:
        raise OptionError("give a prompt: pudding generate [options] PROMPT [PROMPT ...]")
    return build_options(GenerateOptions, cfg), prompts


def choice_line(model, choice: int) -> str:
    """``[name] omits b1,b2,...: K of N blocks kept`` for a choice of ``model`` (``dense``: no block omitted)."""
    omitted = model.omission_sets[choice]
    total = model.scorer.num_blocks
    what = f"omits {','.join(map(str, omitted))}" if omitted else "omits no block"
    return f"[{model.candidate_names[choice]}] {what}: {total - len(omitted)} of {total} blocks kept"


def generate(opts: GenerateOptions, prompts: list[str]) -> list[dict]:
    """Check the bundle against the base model, load both, generate; print and return one record per prompt."""
    from pudding.routed.model import PuddingModel

    base, _ = check_bundle(opts.bundle, opts.base, opts.cache_dir)
    model = PuddingModel.from_pretrained(opts.bundle, budget=opts.budget, **asdict(replace(opts.llm, base=base)))
    texts = model.generate(prompts, max_new_tokens=opts.max_new_tokens)
    records = []
    for prompt, choice, text in zip(prompts, model.last_choices, texts, strict=True):
        print(choice_line(model, choice))
        print(text.strip(), flush=True)
        records.append({"prompt": prompt, "choice": model.candidate_names[choice], "text": text})
    return records


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``pudding generate``: input errors are one line on stderr and exit code 2."""
    run_command(PROG, lambda args: generate(*parse_generate(args)), argv)


if __name__ == "__main__":
    main()
