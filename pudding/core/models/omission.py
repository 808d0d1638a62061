"""Run a model with only some of its decoder blocks.

The kept blocks are swapped in as a new ``nn.ModuleList``, so an omitted block is never called: it costs nothing.
For the duration, the model is made to look like a genuinely smaller model (``num_hidden_layers``, per-layer
``layer_types`` and each attention's ``layer_idx`` follow the kept blocks), so masks, KV caches and generation
stay consistent. Everything is restored on exit, also when the body raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from torch import nn

from pudding.core.errors import PuddingError
from pudding.core.models.adapters import get_layers, set_layers


class OmissionError(PuddingError):
    """An omission set that cannot be applied to the model at hand."""


def validate_omission(omit: Iterable[int], num_layers: int) -> tuple[int, ...]:
    """Check an omission set against a model with ``num_layers`` blocks; return it sorted.

    Rejects indices out of range, duplicates, and sets that would leave no block at all.
    """
    omit = list(omit)
    bad = [i for i in omit if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < num_layers]
    if bad:
        raise OmissionError(f"omission set {omit}: block indices {bad} are outside 0..{num_layers - 1}")
    dupes = sorted({i for i in omit if omit.count(i) > 1})
    if dupes:
        raise OmissionError(f"omission set {omit}: blocks {dupes} are listed more than once")
    if len(omit) >= num_layers:
        raise OmissionError(f"omission set {omit} removes all {num_layers} blocks; at least one must stay")
    return tuple(sorted(omit))


def kept_blocks(omit: Iterable[int], num_layers: int) -> tuple[int, ...]:
    """Indices of the blocks that stay, in order."""
    dropped = set(validate_omission(omit, num_layers))
    return tuple(i for i in range(num_layers) if i not in dropped)


@contextmanager
def use_blocks(model: nn.Module, blocks: Sequence[int]) -> Iterator[None]:
    """Run ``model`` through exactly ``blocks`` (indices into the full block list, in the order given)."""
    full = get_layers(model)
    n = len(full)
    if not blocks:
        raise OmissionError("at least one block must be run")
    if any(not 0 <= b < n for b in blocks):
        raise OmissionError(f"blocks {list(blocks)} are not all within 0..{n - 1}")
    config = model.config
    saved_config = {"num_hidden_layers": config.num_hidden_layers}
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        saved_config["layer_types"] = layer_types
    saved_idx: list[tuple[nn.Module, int]] = []
    set_layers(model, nn.ModuleList([full[b] for b in blocks]))
    try:
        config.num_hidden_layers = len(blocks)
        if layer_types is not None:
            config.layer_types = [layer_types[b] for b in blocks]
        for new_idx, b in enumerate(blocks):
            for module in full[b].modules():
                if isinstance(getattr(module, "layer_idx", None), int):
                    saved_idx.append((module, module.layer_idx))
                    module.layer_idx = new_idx
        yield
    finally:
        for module, idx in saved_idx:
            module.layer_idx = idx
        for key, value in saved_config.items():
            setattr(config, key, value)
        set_layers(model, full)


@contextmanager
def omit_blocks(model: nn.Module, omit: Iterable[int]) -> Iterator[None]:
    """Run ``model`` with the blocks in ``omit`` skipped (an empty set is the dense model)."""
    with use_blocks(model, kept_blocks(omit, len(get_layers(model)))):
        yield
