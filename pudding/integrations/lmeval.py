"""lm-eval model ``pudding``: stock lm-eval tasks run on a base LLM routed by a trained router bundle.

After ``import pudding`` the name is in lm-eval's own model registry::

    lm_eval.simple_evaluate(model="pudding", model_args="bundle=checkpoints/router/bundle", tasks=["piqa"])

and from the command line ``python -m pudding.integrations.lmeval_cli run --model pudding --model_args bundle=...
--tasks piqa`` (lm-eval's own CLI, with pudding imported first). Each request is routed on its context (the prompt
lm-eval built, answer excluded), so all choices of a multiple-choice question that share a context share one decision.
``model_args="bundle=...,budget=0.85"`` routes under a compute budget (target mean fraction of blocks kept;
:mod:`pudding.router.budget`), ``budget=argmax`` ignores a bundle's default budget.
"""

from __future__ import annotations

import os
from dataclasses import fields

from lm_eval.api.model import LM

from pudding.core.errors import OptionError
from pudding.core.llm import LLMOptions
from pudding.routed.model import PuddingModel, group_by_choice


class PuddingLM(LM):
    """lm-eval's ``LM`` interface over :class:`PuddingModel` (``model_args``: ``bundle``, ``budget`` and the fields of
    :class:`~pudding.core.llm.LLMOptions`: ``base``, ``dtype``, ``device``, ``batch_tokens``, ``cache_dir``,
    ``device_map``; lm-eval's own arguments, such as ``batch_size``, are not used)."""

    def __init__(self, bundle: str, budget: float | str | None = None, **kwargs: object) -> None:
        super().__init__()
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world > 1:
            raise OptionError(
                f"the lm-eval model pudding runs in one process, this launch has WORLD_SIZE={world}: run lm_eval "
                "without accelerate launch / torchrun (each process would evaluate every request)"
            )
        llm = {f.name: kwargs[f.name] for f in fields(LLMOptions) if kwargs.get(f.name) is not None}
        self.model = PuddingModel.from_pretrained(bundle, budget=budget, **llm)
        self.choices: list[int] = []
        """The candidate chosen for each request of the last call (for inspection and tests)."""

    @property
    def depths(self) -> list[int]:
        """Blocks kept for each request of the last call (its chosen candidate's depth)."""
        return [self.model.blocks_kept[c] for c in self.choices]

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [tuple(r.args[:2]) for r in requests]
        self.choices = self.model.route([c for c, _ in pairs])
        scores = self.model.loglikelihood(pairs)
        return [(s.logprob, s.is_greedy) for s in scores]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Whole-text log-likelihood, routed on the text itself (texts longer than the model's context are cut)."""
        texts = [r.args[0] for r in requests]
        self.choices = self.model.route(texts)
        out: list[float] = [0.0] * len(texts)
        for choice, positions in group_by_choice(self.choices).items():
            scores = self.model.scorer.score([("", texts[p]) for p in positions], omit=self.model.omission_sets[choice])
            for p, score in zip(positions, scores, strict=True):
                out[p] = score.logprob
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy generation per request, cut at the first of its ``until`` strings."""
        out = []
        for request in requests:
            context, gen_kwargs = request.args[0], dict(request.args[1] or {})
            until = gen_kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(gen_kwargs.pop("max_gen_toks", 256))
            gen_kwargs.pop("do_sample", None)
            gen_kwargs.pop("temperature", None)
            (text,) = self.model.generate([context], max_new_tokens=max_new)
            for stop in until:
                if stop and stop in text:
                    text = text[: text.index(stop)]
            out.append(text)
        return out
