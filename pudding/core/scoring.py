"""The scoring engine: batched continuation log-likelihood under an omission set.

Every stage that needs a number from the LLM (evaluation, candidate search, router data, callbacks) asks this
module, so there is exactly one definition of "how likely is this continuation".

Tokenisation follows lm-eval's ``HFLM``: trailing context spaces move into the continuation, the context is
encoded alone, the continuation is what ``encode(context + continuation)`` has beyond the context's tokens, and an
over-long input is cut from the left. So the scored tokens are lm-eval's.

Requests that share a context are packed into one row: the context once, then every continuation as its own
branch that sees the context and itself only (a 4-D attention mask and explicit position ids). A multiple-choice
item pays for its context once instead of once per choice. Rows are length-sorted and padded into batches that
fit a token budget; the LM head runs only on positions whose prediction is scored.

For the candidate search the engine also exposes its inner loop (:meth:`Scorer.prepare` / :meth:`Scorer.run`):
it can run any ordered subset of blocks, record each block's input hidden states, and start from recorded hidden
states instead of the embeddings, which is what makes the greedy search cheap.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from pudding.core.batch_budget import HEAD_CHUNK_ELEMENTS, resolve_batch_tokens
from pudding.core.models.adapters import adapter_for, body, get_layers, hidden_to_logits
from pudding.core.models.hooks import input_injector, input_recorder, output_recorder
from pudding.core.models.omission import kept_blocks, use_blocks

MIN_FILL = 0.9  # rows shorter than this share of a batch's longest row open a new batch (padding waste vs. batch size)


@dataclass(frozen=True)
class Score:
    """Summed log-probability of a continuation, its token count, and whether greedy decoding would produce it."""

    logprob: float
    num_tokens: int
    is_greedy: bool

    @property
    def mean_logprob(self) -> float:
        """Per-token mean log-probability (the router's regression target in the paper)."""
        return self.logprob / max(self.num_tokens, 1)


@dataclass
class _Segment:
    """A shared context and the continuations (branches) scored after it."""

    context: list[int]
    branches: list[list[int]] = field(default_factory=list)
    request_ids: list[int] = field(default_factory=list)

    @property
    def length(self) -> int:
        return len(self.context) + sum(len(b) - 1 for b in self.branches)


def _unpack_wide(segments: Iterable[_Segment], batch_tokens: int) -> list[_Segment]:
    """Segments as rows, except that a row wider than ``batch_tokens`` whose context is shorter than its longest
    branch becomes one row per branch.

    Such a row shares almost nothing (plain texts scored from BOS all share that one token) yet its attention is
    quadratic in its width: SLEB's 96 pooled texts packed after BOS made one 5,841-token row, and a dense pass took
    80 s on 2 CPU cores (61 s of it the kernel paging in fresh score tensors) against 15 s as rows of their own.
    Multiple-choice items (a question longer than its answers, or a row within the budget) keep their packing, so
    their numbers do not change.
    """
    out: list[_Segment] = []
    for seg in segments:
        longest = max(len(b) for b in seg.branches)
        if seg.length <= batch_tokens or len(seg.branches) < 2 or len(seg.context) >= longest:
            out.append(seg)
            continue
        out += [_Segment(seg.context, [b], [r]) for b, r in zip(seg.branches, seg.request_ids, strict=True)]
    return out


@dataclass
class Batch:
    """Model inputs for one padded batch plus where to read each request's scores from."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    score_rows: torch.Tensor  # flat index (row, position) of every scored prediction
    score_pos: torch.Tensor
    targets: torch.Tensor
    owner: torch.Tensor  # which request each scored prediction belongs to (index into Prepared.requests)

    def to(self, device: torch.device) -> Batch:
        return Batch(*(t.to(device) for t in vars(self).values()))

    def context_lengths(self) -> list[int]:
        """Context tokens of each row: its first scored prediction sits at the last context position."""
        first = torch.full((self.input_ids.shape[0],), self.input_ids.shape[1], dtype=torch.long)
        first.scatter_reduce_(0, self.score_rows.cpu(), self.score_pos.cpu(), reduce="amin")
        return (first + 1).tolist()

    def select(self, rows: Sequence[int]) -> tuple[Batch, int]:
        """The batch cut to ``rows`` (in that order) and to their longest row; returns it and the new width.

        Scored positions keep their owners, so a run over selected batches scores exactly those requests.
        """
        index = torch.as_tensor(list(rows), dtype=torch.long)
        where = {int(r): j for j, r in enumerate(index.tolist())}
        keep = torch.tensor([int(r) in where for r in self.score_rows.tolist()], dtype=torch.bool)
        new_rows = torch.tensor([where[int(r)] for r in self.score_rows[keep].tolist()], dtype=torch.long)
        width = int(self.score_pos[keep].max()) + 1 if keep.any() else 1
        width = min(width, self.input_ids.shape[1])
        mask = self.attention_mask[index]
        mask = mask[..., :width, :width] if mask.dim() == 4 else mask[:, :width]
        batch = Batch(
            input_ids=self.input_ids[index, :width],
            attention_mask=mask,
            position_ids=self.position_ids[index, :width],
            score_rows=new_rows,
            score_pos=self.score_pos[keep],
            targets=self.targets[keep],
            owner=self.owner[keep],
        )
        return batch, width


@dataclass
class Prepared:
    """Tokenised, packed and batched requests; reusable across many runs with different blocks.

    ``batches`` stay on the host; :meth:`on` copies them to a device once and keeps that copy, so the hundreds of
    runs of a candidate search (and every omission set of an outcome table) upload their batches once.
    """

    requests: list[tuple[str, str]]
    num_tokens: list[int]
    batches: list[Batch]
    _device_batches: tuple[torch.device, list[Batch]] | None = field(default=None, repr=False, compare=False)

    def on(self, device: torch.device | str) -> list[Batch]:
        """The batches on ``device``: the host batches themselves on a CPU, else a copy made on first use and kept
        (for one device at a time)."""
        device = torch.device(device)
        if device.type == "cpu":
            return self.batches
        if self._device_batches is None or self._device_batches[0] != device:
            self._device_batches = (device, [batch.to(device) for batch in self.batches])
        return self._device_batches[1]


class Scorer:
    """Scores (context, continuation) pairs with a causal LM, optionally with blocks omitted.

    ``batch_tokens`` bounds rows × padded length per forward pass (memory; ``auto``: sized from the device's free
    memory, 1024 off CUDA: :mod:`pudding.core.batch_budget`); ``share_context`` packs choices that
    share a context into one row when the model family supports custom attention masks; ``add_bos_token`` is
    lm-eval's option of the same name (None: the tokenizer's own default).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        batch_tokens: int | str = 1024,
        max_length: int | None = None,
        share_context: bool = True,
        add_bos_token: bool | None = None,
        progress: bool = False,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length or _model_max_length(model, tokenizer)
        self.batch_tokens = resolve_batch_tokens(batch_tokens, model, self.max_length)
        self.packing = share_context and adapter_for(model).packing
        self.add_bos_token = add_bos_token
        self.progress = progress
        self.num_blocks = len(get_layers(model))

    # ----------------------------------------------------------------------------------------- tokenisation
    def encode(self, text: str) -> list[int]:
        kwargs = {} if self.add_bos_token is None else {"add_special_tokens": self.add_bos_token}
        return self.tokenizer.encode(text, **kwargs)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Context and continuation token ids exactly as lm-eval's HFLM makes them."""
        if not context:
            prefix = self.tokenizer.bos_token_id
            if prefix is None:
                prefix = self.tokenizer.eos_token_id
            return [prefix], self.encode(continuation)
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        context_ids = self.encode(context)
        return context_ids, self.encode(context + continuation)[len(context_ids) :]

    # ------------------------------------------------------------------------------------------- batching
    def prepare(self, requests: Sequence[tuple[str, str]]) -> Prepared:
        """Tokenise, pack and batch ``requests`` once, for one or many :meth:`run` calls."""
        requests = list(requests)
        segments: dict[tuple[int, ...], _Segment] = {}
        num_tokens = []
        for rid, (context, continuation) in enumerate(requests):
            ctx, cont = self.encode_pair(context, continuation)
            if not cont:
                raise ValueError(f"request {rid}: continuation {continuation!r} encodes to no tokens")
            if len(cont) > self.max_length:
                raise ValueError(f"request {rid}: continuation of {len(cont)} tokens exceeds max_length")
            whole = (ctx + cont)[-(self.max_length + 1) :]
            ctx = whole[: len(whole) - len(cont)]  # left-truncated like lm-eval
            key = tuple(ctx) if self.packing else (rid, *ctx)
            seg = segments.setdefault(key, _Segment(context=ctx))
            seg.branches.append(cont)
            seg.request_ids.append(rid)
            num_tokens.append(len(cont))
        ordered = sorted(_unpack_wide(segments.values(), self.batch_tokens), key=lambda s: s.length, reverse=True)
        batches, group = [], []
        for seg in ordered:
            full = group and (len(group) + 1) * group[0].length > self.batch_tokens
            # a row much shorter than the batch's first would be mostly padding: start a new batch instead
            if full or (group and seg.length < MIN_FILL * group[0].length):
                batches.append(self._collate(group))
                group = []
            group.append(seg)
        if group:
            batches.append(self._collate(group))
        return Prepared(requests=requests, num_tokens=num_tokens, batches=batches)

    def _collate(self, group: list[_Segment]) -> Batch:
        width = group[0].length
        n = len(group)
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id or 0
        input_ids = torch.full((n, width), pad_id, dtype=torch.long)
        position_ids = torch.zeros((n, width), dtype=torch.long)
        branch_of = torch.full((n, width), -1, dtype=torch.long)  # 0 = context, k+1 = branch k, -1 = padding
        rows, pos, targets, owner = [], [], [], []
        for r, seg in enumerate(group):
            c = len(seg.context)
            input_ids[r, :c] = torch.tensor(seg.context)
            position_ids[r, :c] = torch.arange(c)
            branch_of[r, :c] = 0
            start = c
            for k, (cont, rid) in enumerate(zip(seg.branches, seg.request_ids, strict=True)):
                fed = cont[:-1]  # the last continuation token is predicted, never fed
                end = start + len(fed)
                input_ids[r, start:end] = torch.tensor(fed, dtype=torch.long)
                position_ids[r, start:end] = torch.arange(c, c + len(fed))
                branch_of[r, start:end] = k + 1
                # token t of the branch is predicted at the last context position (t = 0) or at fed token t-1
                rows += [r] * len(cont)
                pos += [c - 1, *range(start, end)]
                targets += cont
                owner += [rid] * len(cont)
                start = end
        attention_mask = self._tree_mask(branch_of) if self.packing else (branch_of >= 0).long()
        return Batch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            score_rows=torch.tensor(rows),
            score_pos=torch.tensor(pos),
            targets=torch.tensor(targets),
            owner=torch.tensor(owner),
        )

    def _tree_mask(self, branch_of: torch.Tensor) -> torch.Tensor:
        """Additive 4-D mask: a token sees earlier context tokens and earlier tokens of its own branch."""
        dtype = next(self.model.parameters()).dtype
        width = branch_of.shape[1]
        q, k = branch_of[:, :, None], branch_of[:, None, :]
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        allowed = causal & (k >= 0) & ((k == 0) | (k == q))
        allowed |= torch.eye(width, dtype=torch.bool)  # padding rows attend to themselves, never NaN
        mask = torch.zeros(allowed.shape, dtype=dtype)
        mask.masked_fill_(~allowed, torch.finfo(dtype).min)
        return mask[:, None]

    # ------------------------------------------------------------------------------------------- running
    @torch.inference_mode()
    def run(
        self,
        prepared: Prepared,
        blocks: Sequence[int] | None = None,
        start_hidden: Sequence[torch.Tensor] | None = None,
        capture: Iterable[int] = (),
        score: bool = True,
    ) -> tuple[list[Score], dict[int, list[torch.Tensor]]]:
        """Score prepared requests running ``blocks`` (default: all), in order.

        ``start_hidden[i]``, when given, replaces the input of the first block in ``blocks`` for batch ``i`` (the
        hidden states an earlier run recorded there). ``capture`` names blocks whose input hidden states are
        recorded and returned, one tensor per batch, for later ``start_hidden`` use; ``blocks[-1] + 1`` may be named
        too (the output of the last block run: the input that block would get). ``score=False`` runs the blocks for
        their captures only: no LM head, and the returned score list is empty (the self router's first pass).
        """
        blocks = list(range(self.num_blocks)) if blocks is None else list(blocks)
        capture = list(capture)
        after = blocks[-1] + 1 if blocks and blocks[-1] + 1 in capture and blocks[-1] + 1 not in blocks else None
        capture = [b for b in capture if b in blocks]
        layers = get_layers(self.model)
        captured: dict[int, list[torch.Tensor]] = {b: [] for b in capture}
        if after is not None:
            captured[after] = []
        device = next(self.model.parameters()).device
        per_position: list[torch.Tensor] = []  # per batch [2, scored positions]: log-probability, non-greedy flag
        current: dict[str, int] = {}
        hooks = []
        if start_hidden is not None:  # registered first, so a capture of blocks[0] records the injected input
            inject = input_injector(start_hidden, current)
            hooks.append(layers[blocks[0]].register_forward_pre_hook(inject, with_kwargs=True))
        hooks += [layers[b].register_forward_pre_hook(input_recorder(captured[b]), with_kwargs=True) for b in capture]
        if after is not None:
            hooks.append(layers[blocks[-1]].register_forward_hook(output_recorder(captured[after])))
        try:
            with use_blocks(self.model, blocks):
                batches = tqdm(prepared.on(device), desc="scoring", leave=False, disable=not self.progress)
                for i, batch in enumerate(batches):
                    current["batch"] = i
                    if score:
                        per_position.append(self._score_batch(batch).to(device))
                    else:
                        self._run_batch(batch)
        finally:
            for hook in hooks:
                hook.remove()
        if not score:
            return [], captured
        return _sums(prepared, per_position), captured

    def _run_batch(self, batch: Batch) -> torch.Tensor:
        """Final (normed) hidden states of one batch through the blocks in use."""
        return body(self.model)(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
        ).last_hidden_state

    def _score_batch(self, batch: Batch) -> torch.Tensor:
        """[2, scored positions] float64 on the LM head's device: each scored token's log-probability, and 1 where
        it is not the greedy token. Nothing is copied to the host here (:func:`_sums` copies once per run)."""
        final = self._run_batch(batch)
        hidden = final[batch.score_rows.to(final.device), batch.score_pos.to(final.device)]
        # A few dozen rows of float32 logits at a time: the max/exp/sum passes then run in cache; with ~1k-row
        # chunks the same work was ~2x slower on CPU, and the LM-head tail dominated continuation-heavy tasks.
        chunk = max(1, HEAD_CHUNK_ELEMENTS // max(1, self.model.config.vocab_size))
        logprobs, misses = [], []
        for lo in range(0, hidden.shape[0], chunk):
            logits = hidden_to_logits(self.model, hidden[lo : lo + chunk]).float()
            target = batch.targets[lo : lo + chunk].to(logits.device)
            picked = logits.gather(1, target[:, None]).squeeze(1)
            top = logits.amax(dim=-1)
            # log-softmax at the target only, computed in place: no second vocabulary-sized tensor is written
            log_norm = top + logits.sub_(top[:, None]).exp_().sum(dim=-1).log()
            logprobs.append((picked - log_norm).double())
            # greedy iff the target's logit is the maximum (a tie counts as greedy; argmax would pick the first)
            misses.append((picked < top).double())
        return torch.stack([torch.cat(logprobs), torch.cat(misses)])

    # --------------------------------------------------------------------------------------- convenience
    def score(self, requests: Sequence[tuple[str, str]], omit: Iterable[int] = ()) -> list[Score]:
        """Score (context, continuation) pairs with the blocks in ``omit`` skipped."""
        prepared = self.prepare(requests)
        return self.run(prepared, kept_blocks(omit, self.num_blocks))[0]


def _sums(prepared: Prepared, per_position: list[torch.Tensor]) -> list[Score]:
    """Each request's summed log-probability and greedy flag from the per-batch [2, positions] tensors of a run:
    one copy to the host, then added up there in position order (the order the sums have always had)."""
    totals = torch.zeros(len(prepared.requests), dtype=torch.float64)
    misses = torch.zeros(len(prepared.requests), dtype=torch.long)  # non-greedy tokens per request
    if per_position:
        values = torch.cat(per_position, dim=1).cpu()
        owner = torch.cat([batch.owner for batch in prepared.batches])
        totals.index_add_(0, owner, values[0])
        misses.index_add_(0, owner, values[1].long())
    return [
        Score(logprob=float(totals[i]), num_tokens=prepared.num_tokens[i], is_greedy=bool(misses[i] == 0))
        for i in range(len(prepared.requests))
    ]


def _model_max_length(model: nn.Module, tokenizer) -> int:
    """The context length lm-eval's HFLM would use: the config's, else the tokenizer's, else 2048."""
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(model.config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < 1_000_000_000:
        return value
    return 2048
