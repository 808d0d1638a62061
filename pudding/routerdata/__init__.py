"""Router data (PuDDing stage 2): every router item scored under every candidate omission set, as a dataset.

Building: :class:`ScoringModule` (scores one work unit under every candidate omission set), :class:`ScoringDataModule`
(router items as fixed work units), :class:`ShardWriter` (atomic per-unit shards) and :func:`build_dataset` (resume,
distribution, atomic assembly), driven by ``pudding dataset``. The dataset on disk: :mod:`.dataset`; without its text,
as a scores file and a release: :mod:`.scores`, :mod:`.release`. Baselines the router must beat: :func:`headroom`.
The router's training DataModule, which reads these datasets, is stage 3's (:mod:`pudding.router.data`).
"""

from __future__ import annotations

from pudding.routerdata.build import build_dataset, build_key, default_work_dir
from pudding.routerdata.dataset import META_FILE, RouterDataError, load_router_dataset, read_meta, save_dataset
from pudding.routerdata.headroom import Headroom, headroom, headroom_table
from pudding.routerdata.predict import ScoringModule, score_candidates
from pudding.routerdata.units import Chunk, ScoringDataModule, gold_request, make_chunks
from pudding.routerdata.writer import ShardWriter

__all__ = [
    "META_FILE",
    "Chunk",
    "Headroom",
    "RouterDataError",
    "ScoringDataModule",
    "ScoringModule",
    "ShardWriter",
    "build_dataset",
    "build_key",
    "default_work_dir",
    "gold_request",
    "headroom",
    "headroom_table",
    "load_router_dataset",
    "make_chunks",
    "read_meta",
    "save_dataset",
    "score_candidates",
]
