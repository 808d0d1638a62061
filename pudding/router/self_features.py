"""The zero-cost ``self`` router's features: the base LLM's own hidden states after its always-kept first blocks.

Every candidate omission set keeps the blocks below ``keep_first`` (the candidate search never removes them), so
their output on a prompt is computed under every choice anyway. A router that reads it needs no second tokenizer
and no second encoder: routing costs a pooling and a small MLP. Those hidden states are pooled over the prompt's
tokens (their mean and the last token's, both kept so the pooling is a training-time choice) and stay frozen.

The prompt's tokens are exactly the context tokens of the scoring engine (:class:`~pudding.core.scoring.Scorer`:
lm-eval's tokenisation, trailing spaces moved out), and the first pass is a Scorer run over the first blocks that
records their output (``capture`` / ``score=False``). So the features a router is trained on, the ones ``route_texts``
computes and the ones routed scoring reads from its own first pass are one computation.

For training, the features of every router-dataset row are computed once and cached beside the dataset
(``<dataset>.self_features/<key>.safetensors``); the key covers the base model, the dataset (build key, candidate
hash, rows), the dtype and ``keep_first``. Pooling is not in the key because both poolings are stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from pudding.core.errors import OptionError, PuddingError
from pudding.core.llm import LLMOptions
from pudding.core.scoring import Prepared, Scorer
from pudding.core.store import KeyedStore, digest

SELF = "self"
POOLINGS = ("mean", "last", "mean_last")
FEATURES_FORMAT = 1
PROBE = " x"
"""Continuation that turns a bare prompt into a scoring request (only its context tokens are read)."""


class SelfRouterError(PuddingError):
    """The ``self`` router cannot be set up: candidates that omit an always-kept block, no base model, a mismatch."""


def keep_first_of(meta: dict, search: dict | None = None) -> int:
    """``keep_first`` of a router dataset's candidate file (default 1), checked against its omission sets.

    ``search`` is the candidate file's ``search`` section when the file is at hand; else the dataset metadata's
    ``candidates_file`` is read when it exists with the recorded hash.
    """
    if search is None:
        from pudding.core.candidates import file_hash, load_candidates

        source = meta.get("candidates_file")
        search = {}
        if source and Path(source).is_file() and file_hash(source) == meta.get("candidates_sha256"):
            search = dict(load_candidates(source).search)
    keep_first = int(search.get("keep_first", 1))
    lowest = min((min(s) for s in meta.get("omission_sets", []) if s), default=None)
    if lowest is not None and lowest < keep_first:
        raise SelfRouterError(
            f"router encoder self: a candidate omits block {lowest}, below keep_first={keep_first}; the self router "
            "reads the output of blocks every candidate keeps"
        )
    if keep_first < 1:
        raise SelfRouterError("router encoder self: keep_first must be at least 1 (the first block is the router's)")
    return keep_first


def pool_rows(hidden: torch.Tensor, lengths: Sequence[int]) -> torch.Tensor:
    """[rows, 2D] float32: mean over each row's first ``lengths[r]`` positions, then the last of them."""
    hidden = hidden.float()
    width = hidden.shape[1]
    lengths_t = torch.as_tensor(list(lengths), dtype=torch.long, device=hidden.device).clamp(1, width)
    mask = (torch.arange(width, device=hidden.device)[None, :] < lengths_t[:, None]).to(hidden.dtype)
    mean = (hidden * mask[..., None]).sum(1) / lengths_t[:, None].to(hidden.dtype)
    last = hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths_t - 1]
    return torch.cat([mean, last], dim=-1)


def select_pooling(features: torch.Tensor, pooling: str) -> torch.Tensor:
    """The chosen pooling out of stored [.., 2D] (mean, last) features."""
    d = features.shape[-1] // 2
    if pooling == "mean":
        return features[..., :d]
    if pooling == "last":
        return features[..., d:]
    if pooling == "mean_last":
        return features
    raise OptionError(f"option model.pooling: {pooling!r} is not one of {', '.join(POOLINGS)} for encoder self")


class SelfFeatures:
    """Runs the first ``keep_first`` blocks of a base LLM through the Scorer and pools their output per prompt."""

    def __init__(self, model: nn.Module, tokenizer, keep_first: int, batch_tokens: int | str = 1024) -> None:
        self.scorer = Scorer(model, tokenizer, batch_tokens=batch_tokens)
        if not 1 <= keep_first < self.scorer.num_blocks:
            raise SelfRouterError(f"keep_first={keep_first} must lie in 1..{self.scorer.num_blocks - 1}")
        self.keep_first = keep_first

    @property
    def hidden_size(self) -> int:
        return int(self.scorer.model.config.hidden_size)

    def first_pass(self, prepared: Prepared) -> list[torch.Tensor]:
        """Per batch, the hidden states entering block ``keep_first`` (the first blocks run once, no LM head)."""
        _, captured = self.scorer.run(prepared, list(range(self.keep_first)), capture=[self.keep_first], score=False)
        return captured[self.keep_first]

    def request_features(self, prepared: Prepared, hidden: Sequence[torch.Tensor]) -> torch.Tensor:
        """[requests, 2D] pooled features of each request's context, read from a first pass's hidden states."""
        out = torch.empty((len(prepared.requests), 2 * hidden[0].shape[-1]), dtype=torch.float32)
        for batch, states in zip(prepared.batches, hidden, strict=True):
            rows = pool_rows(states, batch.context_lengths()).cpu()
            out[batch.owner.cpu()] = rows[batch.score_rows.cpu()]
        return out

    @torch.inference_mode()
    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        """[N, 2D] float32 features of raw prompts (the router texts), rows in input order."""
        texts = list(texts)
        if not texts:
            return torch.empty((0, 2 * self.hidden_size))
        prepared = self.scorer.prepare([(text, PROBE) for text in texts])
        return self.request_features(prepared, self.first_pass(prepared))


class SelfEncoder(nn.Module):
    """The ``self`` router's encoder: no weights; picks the pooling out of stored features, or computes them.

    Training batches carry precomputed features; ``predict_texts`` computes them with the base LLM, which is
    attached (:meth:`attach`, from ``load_bundle(..., lm=...)``) or loaded on first use from the recorded name. The
    LLM is held outside the module tree, so it is never saved, trained or moved with the router.
    """

    def __init__(self, pooling: str = "mean") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise OptionError(f"option model.pooling: {pooling!r} is not one of {', '.join(POOLINGS)} for encoder self")
        self.pooling = pooling
        self.info: dict = {}
        self._features: SelfFeatures | None = None
        self._memo: dict[str, torch.Tensor] = {}

    def configure(self, info: dict) -> None:
        """Take the feature description (base model, block count, hidden size, keep_first, dtype) from the data."""
        for key in ("base_model", "hidden_size", "keep_first"):
            if key not in info:
                raise SelfRouterError(f"router encoder self: feature metadata lacks {key!r}")
        self.info = dict(info)

    @property
    def out_features(self) -> int:
        d = int(self.info["hidden_size"])
        return 2 * d if self.pooling == "mean_last" else d

    @property
    def keep_first(self) -> int:
        return int(self.info["keep_first"])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return select_pooling(features, self.pooling)

    def attach(self, model: nn.Module, tokenizer, batch_tokens: int | str = 1024) -> SelfFeatures:
        """Use this base LLM for features (checked against the recorded hidden size and block count)."""
        self._features = self._extractor(model, tokenizer, batch_tokens)
        self._memo.clear()
        return self._features

    def precompute(self, model: nn.Module, tokenizer, texts: Sequence[str], batch_tokens: int | str = 1024) -> None:
        """Compute and keep the features of ``texts`` with this base LLM, without holding on to the LLM.

        The zero-shot callback loads the base LLM once for its outcomes; its items' features come from that same
        copy, so routing them every epoch needs no second one (:meth:`texts` answers them from memory).
        """
        todo = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if todo:
            features = self._extractor(model, tokenizer, batch_tokens).texts(todo)
            self._memo.update(zip(todo, features, strict=True))

    def _extractor(self, model: nn.Module, tokenizer, batch_tokens: int | str) -> SelfFeatures:
        config = model.config
        if self.info and int(config.hidden_size) != int(self.info["hidden_size"]):
            raise SelfRouterError(
                f"router encoder self: trained on {self.info['base_model']!r} (hidden size "
                f"{self.info['hidden_size']}), the base model given has hidden size {config.hidden_size}"
            )
        features = SelfFeatures(model, tokenizer, self.keep_first, batch_tokens=batch_tokens)
        blocks = self.info.get("num_blocks")
        if blocks is not None and features.scorer.num_blocks != int(blocks):
            raise SelfRouterError(
                f"router encoder self: trained on {self.info['base_model']!r} with {blocks} blocks, the base model "
                f"given has {features.scorer.num_blocks}"
            )
        return features

    @property
    def features(self) -> SelfFeatures:
        """The attached feature extractor; loads the recorded base model (in its recorded dtype, on CUDA where there
        is one, as every ``device: auto``) when none is attached."""
        if self._features is None:
            if not self.info:
                raise SelfRouterError("router encoder self: no base model known yet (set up with a router dataset)")
            from pudding.core.models.loading import load_base

            lm = load_base(
                self.info["base_model"],
                dtype=self.info.get("dtype", "auto"),
                device="auto",
                cache_dir=self.info.get("cache_dir", "checkpoints/base_models"),
            )
            self.attach(lm.model, lm.tokenizer)
        assert self._features is not None
        return self._features

    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        """[N, 2D] features of raw prompts; a text seen before is not run again (the zero-shot callback's items)."""
        texts = list(texts)
        todo = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if todo:
            for text, row in zip(todo, self.features.texts(todo), strict=True):
                self._memo[text] = row
        if not texts:
            return torch.empty((0, 2 * int(self.info["hidden_size"])))
        return torch.stack([self._memo[t] for t in texts])


# ----------------------------------------------------------------------------------------- dataset feature cache
def rows_digest(tasks: Sequence[str], item_ids: Sequence[str], texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for task, item, text in zip(tasks, item_ids, texts, strict=True):
        digest.update(f"{task}\0{item}\0{text}\0".encode())
    return digest.hexdigest()


def cache_store(dataset: str | Path) -> KeyedStore:
    """Where a router dataset's features are kept: ``<dataset>.self_features/`` beside it."""
    dataset = Path(dataset)
    return KeyedStore(dataset.parent / f"{dataset.name}.self_features")


def dataset_features(
    path: str | Path,
    columns: dict[str, list],
    meta: dict,
    llm: LLMOptions | None = None,
    lm=None,
    log=None,
) -> tuple[torch.Tensor, dict]:
    """[rows, 2D] features of one router dataset's rows (in stored order) and their description; cached.

    ``columns`` are the dataset's ``task``, ``item_id`` and ``router_text`` columns. The base model is the
    dataset's own unless ``llm.base`` names another; ``lm`` (a loaded :class:`pudding.core.models.loading.BaseModel`)
    is used instead of loading one. The cache file is written atomically.
    """
    llm = llm or LLMOptions()
    keep_first = keep_first_of(meta)
    base_name = llm.base_or(meta["base_model"])
    run_device = llm.run_device() if lm is None else lm.device
    dtype_name = llm.dtype_choice(run_device).name
    identity = {
        "format": FEATURES_FORMAT,
        "base_model": base_name,
        "dataset": meta.get("build_key") or meta["candidates_sha256"],
        "rows": rows_digest(columns["task"], columns["item_id"], columns["router_text"]),
        "dtype": dtype_name,
        "keep_first": keep_first,
    }
    key = digest(identity)
    store, name = cache_store(path), f"{key[:24]}.safetensors"
    info = {**identity, "key": key, "num_blocks": meta.get("num_blocks"), "cache_dir": llm.cache_dir}
    found = store.read_tensors(name, key)
    if found is not None:
        stored = found[0]
        features = torch.cat([stored["mean"], stored["last"]], dim=-1)
        if features.shape[0] == len(columns["task"]):
            return features, {**info, "hidden_size": int(stored["mean"].shape[1]), "cached": True}
    if lm is None:
        lm = replace(llm, dtype=dtype_name).load(base_name, run_device)
    if log:
        rows = len(columns["task"])
        log(f"self router: features of {rows} rows of {path} (first {keep_first} blocks of {base_name})")
    extractor = SelfFeatures(lm.model, lm.tokenizer, keep_first, batch_tokens=llm.batch_tokens)
    if meta.get("num_blocks") is not None and extractor.scorer.num_blocks != int(meta["num_blocks"]):
        raise SelfRouterError(
            f"{path}: the dataset's candidates are for {meta['num_blocks']} blocks, base model {base_name!r} has "
            f"{extractor.scorer.num_blocks}"
        )
    features = extractor.texts(columns["router_text"])
    d = features.shape[1] // 2
    store.write_tensors(
        name,
        key,
        {"mean": features[:, :d].contiguous(), "last": features[:, d:].contiguous()},
        {k: str(v) for k, v in identity.items()},
    )
    return features, {**info, "hidden_size": d, "cached": False}
