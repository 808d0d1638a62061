"""Integrations with other tools: the lm-eval model ``pudding`` (:mod:`.lmeval`) and lm-eval's own CLI with it
registered (:mod:`.lmeval_cli`)."""

from __future__ import annotations

LM_EVAL_MODEL = "pudding"
LM_EVAL_TARGET = "pudding.integrations.lmeval:PuddingLM"


def register_lm_eval_model() -> None:
    """Add ``pudding`` to lm-eval's model registry, lazily (nothing heavy loads until lm-eval asks for the model), and
    after lm-eval's own models (it imports them only into an empty registry, so registering first would hide ``hf``
    and the rest)."""
    try:
        import lm_eval.models  # noqa: F401
        from lm_eval.api.registry import model_registry
    except ImportError:  # lm-eval is a dependency; a broken install should not break the rest of pudding
        return
    if LM_EVAL_MODEL not in model_registry:
        model_registry.register(LM_EVAL_MODEL, target=LM_EVAL_TARGET)
