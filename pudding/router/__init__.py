"""The router (PuDDing stage 3): reads a prompt and predicts, per choice (candidate omission set, or the dense
model), the LLM's score with it.

:class:`~pudding.router.model.Router` is the network and its routing (what a bundle holds, :mod:`.bundle`);
:class:`~pudding.router.module.RouterModule` trains it on :class:`~pudding.router.data.RouterDataModule` batches, with
its metrics (:mod:`.metrics`), length-grouped batches (:mod:`.sampler`), the zero-shot callback (:mod:`.zeroshot`) and
the best static reference (:mod:`.static`). A compute budget per prompt: :mod:`.budget`; the ``self`` router's
features: :mod:`.self_features`; a text router's encoder: :mod:`.text`.
"""
