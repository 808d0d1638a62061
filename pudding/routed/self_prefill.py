"""Generation pre-fill for a ``self`` router: the first blocks run once on the prompt, and their keys/values stay.

The router reads the output of the always-kept first blocks, so the omission set is known only after they ran. This
pre-fill runs them once on the (left-padded) prompts with a KV cache, hands their output to a routing function, and
then, per chosen set, runs that set's remaining kept blocks from that same hidden state into the same cache layers.
``generate`` then continues from the filled cache with the chosen set's blocks.

``generate`` needs at least one prompt token it has not seen, so the cache holds all prompt tokens but the last: the
first blocks' layers are cropped by one token after routing, the remaining blocks run on all but the last token, and
``generate``'s first step runs the last token through all kept blocks (one token's worth of the first blocks is
computed a second time; the rest of the prompt never is).

Cache layer ``i`` belongs to the ``i``-th kept block of the chosen set, first blocks included, which is the
numbering :func:`pudding.core.models.omission.use_blocks` gives the attention modules during generation.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache

from pudding.core.models.adapters import body, get_layers
from pudding.core.models.hooks import input_injector, output_recorder
from pudding.core.models.omission import kept_blocks, omit_blocks, use_blocks


@dataclass
class RoutedPrefill:
    """One chosen set's share of a pre-fill: its prompt rows and the cache to hand to ``generate``."""

    choice: int
    rows: list[int]
    cache: DynamicCache


def position_ids_of(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions of left-padded rows as ``generate`` computes them (padding at position 0)."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


def run_blocks(
    model: nn.Module,
    blocks: Sequence[int],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    cache: DynamicCache,
    start_hidden: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run ``blocks`` on the inputs, filling ``cache`` (layer ``i`` = ``blocks[i]``); the last block's output.

    ``start_hidden`` replaces the input of ``blocks[0]`` (the embeddings are computed and discarded).
    """
    layers = get_layers(model)
    out: list[torch.Tensor] = []
    hooks = [layers[blocks[-1]].register_forward_hook(output_recorder(out))]
    if start_hidden is not None:
        inject = input_injector([start_hidden], {"batch": 0})
        hooks.append(layers[blocks[0]].register_forward_pre_hook(inject, with_kwargs=True))
    try:
        with use_blocks(model, blocks):
            body(model)(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids_of(attention_mask),
                cache=cache,
                use_cache=True,
            )
    finally:
        for hook in hooks:
            hook.remove()
    return out[0]


@torch.inference_mode()
def routed_prefill(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    keep_first: int,
    omission_sets: Sequence[Sequence[int]],
    choose: Callable[[torch.Tensor], Sequence[int]],
) -> list[RoutedPrefill]:
    """Pre-fill left-padded prompts: first blocks once, ``choose`` per row, then each chosen set's other blocks.

    ``choose`` maps the first blocks' output [rows, width, D] to a candidate index per row. Every omission set must
    keep the blocks below ``keep_first``. Groups come in first-seen order of their candidate.
    """
    num_blocks = len(get_layers(model))
    first = list(range(keep_first))
    with use_blocks(model, first):
        first_cache = DynamicCache(config=model.config)
    first_cache.activate_past_recording()  # sliding-window layers can then be cropped by one token
    hidden = run_blocks(model, first, input_ids, attention_mask, first_cache)
    choices = [int(c) for c in choose(hidden)]
    first_cache.crop(-1)  # generate's first step feeds the last prompt token
    groups: dict[int, list[int]] = {}
    for row, choice in enumerate(choices):
        groups.setdefault(choice, []).append(row)
    out = []
    for choice, rows in groups.items():
        kept = kept_blocks(omission_sets[choice], num_blocks)
        if list(kept[:keep_first]) != first:
            raise ValueError(f"omission set {list(omission_sets[choice])} omits a block below keep_first={keep_first}")
        with omit_blocks(model, omission_sets[choice]):
            cache = DynamicCache(config=model.config)
        index = torch.tensor(rows, device=input_ids.device)
        if input_ids.shape[1] == 1:  # one-token prompts: nothing to cache, generate's first step is the pre-fill
            out.append(RoutedPrefill(choice=choice, rows=rows, cache=cache))
            continue
        for i in range(keep_first):
            layer = copy.copy(first_cache.layers[i])
            layer.batch_select_indices(index)  # assigns new tensors: the shared first pass stays intact
            cache.layers[i] = layer
        rest = list(kept[keep_first:])
        if rest:
            view = DynamicCache()
            view.layers = cache.layers[keep_first:]  # the same layer objects: filling the view fills ``cache``
            run_blocks(
                model,
                rest,
                input_ids[index, :-1],
                attention_mask[index, :-1],
                view,
                start_hidden=hidden[index, :-1],
            )
        out.append(RoutedPrefill(choice=choice, rows=rows, cache=cache))
    return out
