"""pudding: prompt-routed dynamic depth pruning (PuDDing) for decoder-only LLMs.

The public API: ``from pudding import PuddingModel`` (routed inference: a base LLM that skips the blocks its router
picks per prompt) and, for the stages, ``Router`` (the router network), ``load_bundle``, ``LLMOptions``, ``Scorer``
(the scoring engine) and ``omit_blocks``. Importing the package also registers the lm-eval model ``pudding``
(lazily: nothing heavy loads until lm-eval asks for it). The layout: docs/architecture.md.
"""

from __future__ import annotations

from pudding.integrations import register_lm_eval_model

__all__ = ["LLMOptions", "PuddingModel", "Router", "Scorer", "load_bundle", "omit_blocks"]

_PUBLIC = {
    "PuddingModel": "pudding.routed.model",
    "Router": "pudding.router.model",
    "load_bundle": "pudding.router.bundle",
    "LLMOptions": "pudding.core.llm",
    "Scorer": "pudding.core.scoring",
    "omit_blocks": "pudding.core.models.omission",
}

register_lm_eval_model()


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'pudding' has no attribute {name!r}")
