"""pudding: prompt-routed dynamic depth pruning (PuDDing) for decoder-only LLMs.

``from pudding import PuddingModel`` is the routed-inference API. Importing the package also registers the lm-eval
model ``pudding`` (lazily: nothing heavy loads until lm-eval asks for it).
"""

from __future__ import annotations

__all__ = ["PuddingModel"]


def _register_lm_eval_model() -> None:
    """Add ``pudding`` to lm-eval's model registry, after lm-eval's own models (it imports them only into an empty
    registry, so registering first would hide ``hf`` and the rest)."""
    try:
        import lm_eval.models  # noqa: F401
        from lm_eval.api.registry import model_registry
    except ImportError:  # lm-eval is a dependency; a broken install should not break the rest of pudding
        return
    if "pudding" not in model_registry:
        model_registry.register("pudding", target="pudding.routed.lmeval:PuddingLM")


_register_lm_eval_model()


def __getattr__(name: str):
    if name == "PuddingModel":
        from pudding.routed.model import PuddingModel

        return PuddingModel
    raise AttributeError(f"module 'pudding' has no attribute {name!r}")
