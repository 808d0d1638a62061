"""``PuddingModel``: a base LLM plus a trained router bundle, used as one model that skips blocks per prompt.

Every prompt is routed once (the router reads the prompt only, never an answer), then the LLM runs with the chosen
candidate's blocks skipped. A batch is split by chosen candidate and each group runs as one batch through the
project's one scoring engine (:class:`pudding.core.scoring.Scorer`) or through ``generate``; results come back in input
order. Several requests that share a prompt (the choices of one question) share one routing decision.

With a ``self`` router bundle (the router reads the base LLM's own first blocks, :mod:`pudding.router.self_features`)
scoring runs those blocks once per batch, routes each prompt from their output, then continues each row with the
rest of its chosen blocks from that same hidden state (:meth:`Scorer.run` with ``start_hidden``): nothing is
computed twice. ``generate`` does the same into the KV cache (:mod:`pudding.routed.self_prefill`).

A router trained with the dense model as a choice has one more choice than the candidate file (the dense model,
omission set ``[]``, last); :attr:`PuddingModel.omission_sets` and :attr:`PuddingModel.candidate_names` are the
router's choices. ``budget`` (:meth:`PuddingModel.from_pretrained`, :meth:`PuddingModel.set_budget`) routes each
prompt to the choice with the best predicted score + λ × blocks omitted, λ calibrated so that the mean fraction of
blocks kept meets the budget (:mod:`pudding.router.budget`); every routing decision below goes through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from pudding.core.candidates import CandidateSet, load_candidates
from pudding.core.errors import PuddingError
from pudding.core.llm import LLMOptions
from pudding.core.models.adapters import get_layers
from pudding.core.models.loading import BaseModel
from pudding.core.models.omission import omit_blocks, validate_omission
from pudding.core.scoring import Prepared, Score, Scorer
from pudding.router.bundle import BundleError


def _pooled(batch, states: torch.Tensor) -> torch.Tensor:
    """[rows, 2D] first-blocks features of each row's context (what the ``self`` router reads)."""
    from pudding.router.self_features import pool_rows

    return pool_rows(states, batch.context_lengths())


def group_by_choice(choices: Sequence[int]) -> dict[int, list[int]]:
    """Positions of the inputs per chosen candidate, in first-seen order of the candidates."""
    groups: dict[int, list[int]] = {}
    for position, choice in enumerate(choices):
        groups.setdefault(int(choice), []).append(position)
    return groups


class PuddingModel:
    """Routed dynamic depth pruning: the router picks an omission set per prompt, the LLM runs without those blocks.

    Build it with :meth:`from_pretrained`. ``router`` is what :func:`pudding.router.bundle.load_bundle` returns
    (a :class:`~pudding.router.model.Router`; its ``omission_sets`` are the choices); ``candidates`` is the bundle's
    candidate file.
    """

    def __init__(
        self,
        router,
        candidates: CandidateSet,
        lm: BaseModel,
        batch_tokens: int | str = 1024,
        bundle: dict | None = None,
    ) -> None:
        self.router = router
        self.candidates = candidates
        self.lm = lm
        self.scorer = Scorer(lm.model, lm.tokenizer, batch_tokens=batch_tokens)
        num_blocks = self.scorer.num_blocks
        if num_blocks != candidates.num_blocks:
            raise BundleError(
                f"router bundle: candidates are for {candidates.base_model!r} with {candidates.num_blocks} blocks, "
                f"base model {lm.name!r} has {num_blocks}"
            )
        self.omission_sets = [validate_omission(s, num_blocks) for s in router.omission_sets]
        self.bundle = bundle or {}
        self.bundle_dir: Path | None = None
        self.last_choices: list[int] = []
        """The choice (index into :attr:`candidate_names`) of each prompt of the last :meth:`generate` call."""
        if self.is_self:  # the router reads this very model's first blocks
            self.router.encoder.attach(lm.model, lm.tokenizer, batch_tokens=batch_tokens)

    @classmethod
    def from_pretrained(
        cls, bundle_dir: str | Path, budget: float | str | None = None, **llm: str | int | None
    ) -> PuddingModel:
        """Load a router bundle (a folder, or ``default``: the released ``self`` router of the default base model,
        :func:`pudding.router.bundle.resolve_bundle`) and its base model (the bundle's own unless ``base`` names
        another one).

        ``llm``: the base LLM's settings, the fields of :class:`~pudding.core.llm.LLMOptions` (``base``, ``dtype``,
        ``device``, ``batch_tokens``, ``cache_dir``, ``device_map``).

        ``budget``: target mean fraction of blocks kept, in (0, 1] (:mod:`pudding.router.budget`); None: the bundle's
        default (plain argmax unless it records one); ``argmax``: plain argmax. It needs choices of different depths
        (a router trained with ``data.dense_choice``, or candidates of several depths). ``1.0`` sends every prompt
        to the dense model when it is a choice; without one, to its best largest-kept candidate.
        """
        from pudding.router.budget import parse_budget
        from pudding.router.bundle import check_bundle_files, load_bundle

        budget = parse_budget(budget)  # a bad budget fails before the base model loads
        options = LLMOptions(**llm)
        bundle_dir = check_bundle_files(bundle_dir)  # a missing bundle fails before the base model loads
        candidates = load_candidates(bundle_dir / "candidates.yaml")
        lm = options.load(candidates.base_model)
        router, config = load_bundle(bundle_dir, base_num_blocks=len(get_layers(lm.model)), lm=lm, budget=budget)
        model = cls(router, candidates, lm, batch_tokens=options.batch_tokens, bundle=config)
        model.bundle_dir = bundle_dir
        return model

    # ------------------------------------------------------------------------------------------------ routing
    @property
    def is_self(self) -> bool:
        """Whether the router reads the base LLM's first blocks (a ``self`` bundle)."""
        return self.router.is_self

    @property
    def candidate_names(self) -> list[str]:
        """Names of the router's choices (the candidates', plus ``dense`` when the dense model is a choice)."""
        return self.router.candidate_names

    @property
    def blocks_kept(self) -> list[int]:
        """Blocks kept by each choice: ``[model.blocks_kept[c] for c in model.route(prompts)]`` is each prompt's
        depth."""
        return [self.scorer.num_blocks - len(s) for s in self.omission_sets]

    @property
    def budget(self) -> float | None:
        """The compute budget routing follows (None: plain argmax)."""
        return self.router.budget

    def set_budget(self, budget: float | str | None) -> float:
        """Route under ``budget`` from now on (a number in (0, 1]; None or ``argmax``: plain argmax). Returns λ."""
        from pudding.router.budget import ARGMAX, parse_budget

        budget = parse_budget(budget)
        return self.router.set_budget(None if budget in (None, ARGMAX) else budget)

    def _choose(self, preds: torch.Tensor) -> list[int]:
        """Choices from router predictions [N, C]: the router's own rule (argmax, or the budget's)."""
        return self.router.choose(preds).tolist()

    def check_prompts(self, prompts: Sequence[str]) -> None:
        """Refuse prompts that are empty or longer than the base model's context, naming the first such prompt."""
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str) or not prompt.strip():
                raise PuddingError(f"prompt {i} is empty: the router needs text to choose an omission set")
            length = len(self.scorer.encode(prompt))
            if length > self.scorer.max_length:
                raise PuddingError(
                    f"prompt {i} has {length} tokens, more than the base model's context of {self.scorer.max_length}"
                )

    def route(self, prompts: Sequence[str]) -> list[int]:
        """The chosen candidate (index into the candidate file) per prompt; each distinct prompt is routed once."""
        self.check_prompts(prompts)
        distinct = list(dict.fromkeys(prompts))
        if not distinct:
            return []
        chosen = dict(zip(distinct, self.router.route_texts(distinct), strict=True))
        return [int(chosen[p]) for p in prompts]

    # ------------------------------------------------------------------------------------------------ scoring
    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[Score]:
        """Score ``(context, continuation)`` pairs, each with the omission set chosen for its context."""
        requests = [(str(c), str(x)) for c, x in requests]
        if self.is_self:
            return self._self_loglikelihood(requests)
        choices = self.route([c for c, _ in requests])
        out: list[Score | None] = [None] * len(requests)
        for choice, positions in group_by_choice(choices).items():
            scores = self.scorer.score([requests[p] for p in positions], omit=self.omission_sets[choice])
            for p, score in zip(positions, scores, strict=True):
                out[p] = score
        return out  # type: ignore[return-value]

    def _self_loglikelihood(self, requests: list[tuple[str, str]]) -> list[Score]:
        """``self`` router: first blocks once per batch, route per row, the rest of each row's blocks from there."""
        self.check_prompts([c for c, _ in requests])
        features = self.router.encoder.features
        if not requests:
            return []
        keep_first = features.keep_first
        prepared = self.scorer.prepare(requests)
        hidden = features.first_pass(prepared)
        # one routing decision per row (a row is one context with all its continuations)
        parts: dict[int, tuple[list, list]] = {}
        for batch, states in zip(prepared.batches, hidden, strict=True):
            rows = self._choose(self.router.predict_features(_pooled(batch, states)))
            for choice in set(rows):
                picked = [r for r, c in enumerate(rows) if c == choice]
                sub, width = batch.select(picked)
                parts.setdefault(int(choice), ([], []))
                parts[int(choice)][0].append(sub)
                parts[int(choice)][1].append(states[picked, :width])
        out: list[Score | None] = [None] * len(requests)
        for choice, (batches, starts) in parts.items():
            rest = [b for b in range(self.scorer.num_blocks) if b >= keep_first and b not in self.omission_sets[choice]]
            group = Prepared(requests=prepared.requests, num_tokens=prepared.num_tokens, batches=batches)
            scores, _ = self.scorer.run(group, rest, start_hidden=starts)
            for batch in batches:
                for owner in set(batch.owner.tolist()):
                    out[owner] = scores[owner]
        return out  # type: ignore[return-value]

    # ---------------------------------------------------------------------------------------------- generation
    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], **generate_kwargs) -> list[str]:
        """Continue each prompt with the chosen blocks skipped for the whole generation (prefill and every step).

        Prompts of one chosen candidate are generated together, left-padded; ``generate_kwargs`` go to
        ``transformers``' ``generate`` (greedy with 32 new tokens unless given). Returns the new text only; each
        prompt's choice is left in :attr:`last_choices`. ``generate`` never compiles here (``disable_compile``):
        on CUDA it compiles the forward for static and hybrid caches (Gemma 2/3), and a graph traced over one block
        set's layers would be recompiled for every other set.

        With a ``self`` router the first blocks run once on all prompts together, filling their share of the KV
        cache; each prompt is routed from their output and its chosen set's other blocks continue from there
        (:func:`pudding.routed.self_prefill.routed_prefill`), so the prompt is not run through them again (only
        its last token, as ``generate``'s first step).
        """
        tokenizer = self.lm.tokenizer
        model = self.lm.model
        generate_kwargs.setdefault("max_new_tokens", 32)
        generate_kwargs.setdefault("do_sample", False)
        generate_kwargs.setdefault("disable_compile", True)  # a compiled forward would recompile for every block set
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        generate_kwargs.setdefault("pad_token_id", pad_id)
        out: list[str | None] = [None] * len(prompts)
        chosen: list[int] = [-1] * len(prompts)
        saved_side, saved_pad = tokenizer.padding_side, tokenizer.pad_token
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        try:
            if self.is_self:
                groups = self._self_prefill(prompts)
            else:
                choices = self.route(prompts)
                groups = [(choice, positions, None) for choice, positions in group_by_choice(choices).items()]
            for choice, positions, batch in groups:
                if batch is None:
                    batch = tokenizer([prompts[p] for p in positions], return_tensors="pt", padding=True)
                    batch = {k: v.to(self.lm.device) for k, v in batch.items()}
                with omit_blocks(model, self.omission_sets[choice]):
                    generated = model.generate(**batch, **generate_kwargs)
                new = generated[:, batch["input_ids"].shape[1] :]
                for p, ids in zip(positions, new, strict=True):
                    out[p] = tokenizer.decode(ids, skip_special_tokens=True)
                    chosen[p] = int(choice)
        finally:
            tokenizer.padding_side = saved_side
            tokenizer.pad_token = saved_pad
        self.last_choices = chosen
        return out  # type: ignore[return-value]

    def _self_prefill(self, prompts: Sequence[str]) -> list[tuple[int, list[int], dict]]:
        """``self`` router: (choice, prompt positions, ``generate`` inputs with the filled KV cache) per chosen set.

        Each distinct prompt is pre-filled once. The routing features pool the first blocks' output over the
        prompt's scoring-engine context tokens (what the router was trained on and what :meth:`route` reads) when
        they begin the generation tokens, which they do unless trailing whitespace tokenises differently.
        """
        from pudding.routed.self_prefill import routed_prefill
        from pudding.router.self_features import PROBE, pool_rows

        self.check_prompts(prompts)
        if not prompts:
            return []
        tokenizer = self.lm.tokenizer
        distinct = list(dict.fromkeys(prompts))
        batch = tokenizer(distinct, return_tensors="pt", padding=True)
        input_ids = batch["input_ids"].to(self.lm.device)
        mask = batch["attention_mask"].to(self.lm.device)
        width = input_ids.shape[1]
        spans = []  # per prompt: first position and number of tokens the router pools over
        for row, prompt in enumerate(distinct):
            length = int(mask[row].sum())
            ids = input_ids[row, width - length :].tolist()
            context = self.scorer.encode_pair(prompt, PROBE)[0]
            pooled = len(context) if 0 < len(context) <= length and ids[: len(context)] == context else length
            spans.append((width - length, pooled))

        def choose(hidden: torch.Tensor) -> list[int]:
            pooled = torch.cat([pool_rows(hidden[row : row + 1, start:], [n]) for row, (start, n) in enumerate(spans)])
            return self._choose(self.router.predict_features(pooled))

        keep_first = self.router.encoder.features.keep_first
        where = {prompt: row for row, prompt in enumerate(distinct)}
        groups = []
        for part in routed_prefill(self.lm.model, input_ids, mask, keep_first, self.omission_sets, choose):
            chosen = set(part.rows)
            positions = [p for p, prompt in enumerate(prompts) if where[prompt] in chosen]
            # generate gets one row per position: repeat the cache rows of prompts that occur more than once
            order = [part.rows.index(where[prompts[p]]) for p in positions]
            if order != list(range(len(part.rows))):
                part.cache.batch_select_indices(torch.tensor(order, device=self.lm.device))
            rows = torch.tensor([where[prompts[p]] for p in positions], device=self.lm.device)
            inputs = {"input_ids": input_ids[rows], "attention_mask": mask[rows], "cache": part.cache}
            groups.append((part.choice, positions, inputs))
        return groups
