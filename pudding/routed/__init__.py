"""Routed inference (PuDDing stage 4): a base LLM that skips the blocks a trained router picks for each prompt.

:class:`~pudding.routed.model.PuddingModel` (scoring and generation, :mod:`.self_prefill` for the ``self`` router's
one-pass pre-fill), the table of a bundle against every baseline (:mod:`.evaluate`), its accuracy–compute curve
(:mod:`.sweep`) and timing (:mod:`.bench`).
"""
