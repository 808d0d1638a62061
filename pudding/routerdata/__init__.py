"""Router training data (PuDDing stage 2): build it with a Lightning predict run, serve it with a DataModule.

Building: :class:`ScoringModule` (scores one work unit under every candidate omission set), :class:`ScoringDataModule`
(router items as fixed work units), :class:`ShardWriter` (atomic per-unit shards) and :func:`build_dataset` (resume,
distribution, atomic assembly), driven by ``pudding dataset``. Serving: :class:`RouterDataModule`. Baselines the
router must beat: :func:`headroom`.
"""

from __future__ import annotations

from pudding.routerdata.build import build_dataset, build_key, default_work_dir
from pudding.routerdata.datamodule import (
    TARGET_TRANSFORMS,
    RouterCollator,
    RouterDataModule,
    resolve_router,
    transform_targets,
)
from pudding.routerdata.headroom import Headroom, headroom, headroom_table
from pudding.routerdata.module import ScoringModule, score_candidates
from pudding.routerdata.store import META_FILE, RouterDataError, load_router_dataset, read_meta, save_dataset
from pudding.routerdata.units import Chunk, ScoringDataModule, gold_request, make_chunks
from pudding.routerdata.writer import ShardWriter

__all__ = [
    "META_FILE",
    "TARGET_TRANSFORMS",
    "Chunk",
    "Headroom",
    "RouterCollator",
    "RouterDataError",
    "RouterDataModule",
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
    "resolve_router",
    "save_dataset",
    "score_candidates",
    "transform_targets",
]
