"""Work shared by several processes (pudding.core.spread): the deal, outcome shards scored by two ranks, worker errors.

Two-process runs of the commands and of router training are in test_distributed.py."""

from __future__ import annotations

import copy
import threading
from dataclasses import replace

import numpy as np
import pytest
from test_outcomes import SETS, make_items

from pudding.core.errors import OptionError
from pudding.core.outcomes import cache_key, compute_outcomes, set_key, shard_name, shard_store, spread_outcomes
from pudding.core.scoring import Scorer
from pudding.core.spread import Share, SpreadOptions, deal, rank_device, rank_devices, spread, text_cost, wait_for


def test_deal_gives_every_unit_one_rank_and_balances_by_size():
    # two tasks of 200 items in chunks of 128: i % 2 would give one rank both full chunks (256 against 144)
    costs = [128, 72, 128, 72]
    owners = deal(costs, 2)
    loads = [sum(c for c, o in zip(costs, owners, strict=True) if o == r) for r in (0, 1)]
    assert owners == [0, 0, 1, 1] and loads == [200, 200]
    assert deal(costs, 2) == owners and deal(costs, 1) == [0, 0, 0, 0]  # the same on every rank; one rank: all
    assert deal([5, 5, 5], 4) == [0, 1, 2]  # more ranks than units: some rank has none
    owners = deal([float(c) for c in range(1, 40)], 3)
    assert sorted(i for r in range(3) for i in Share(r, 3).mine(owners)) == list(range(39))
    loads = [sum(c for c, o in zip(range(1, 40), owners, strict=True) if o == r) for r in range(3)]
    assert max(loads) - min(loads) <= 2  # i % 3 would give 247, 260 and 273
    # a unit's size: each distinct context once (the engine packs its choices into one row), every continuation
    assert text_cost([("Q: ab?", " yes"), ("Q: ab?", " no"), ("Other", " x")]) == 6 + 4 + 3 + 5 + 2


def test_ranks_score_their_own_chunks_and_read_everyones(tiny_llama, tokenizer, tmp_path):
    """Two ranks (threads here, each with its own copy of the model) share three tasks' chunks through a shard folder:
    each scores only its own units, neither stops before all shards are there, and both read the outcomes one
    process computes without any cache."""
    items = {task: [replace(i, task=task) for i in make_items(9, seed=n)] for n, task in enumerate(("a", "b", "c"))}
    want = {
        task: compute_outcomes(Scorer(tiny_llama, tokenizer), its, SETS, chunk_items=4) for task, its in items.items()
    }
    scored: dict[int, list[tuple[str, int]]] = {0: [], 1: []}
    got: dict[int, dict] = {}

    def rank(r: int) -> None:
        scorer = Scorer(copy.deepcopy(tiny_llama), copy.deepcopy(tokenizer))  # omission swaps blocks: a copy each
        done = scored[r]
        got[r] = spread_outcomes(
            scorer, items, SETS, "tiny", tmp_path, Share(r, 2), chunk_items=4, on_chunk=lambda t, *a: done.append(t)
        )

    other = threading.Thread(target=rank, args=(1,))
    other.start()
    rank(0)
    other.join(timeout=600)
    assert len(scored[0]) + len(scored[1]) == 9 and scored[0] and scored[1]  # 3 tasks × 3 chunks, each scored once
    for r in (0, 1):
        for task, out in want.items():
            assert got[r][task].item_ids == out.item_ids
            for omit in SETS:
                assert np.array_equal(got[r][task].pred[set_key(omit)], out.pred[set_key(omit)])
                assert np.array_equal(got[r][task].pred_norm[set_key(omit)], out.pred_norm[set_key(omit)])
    scorer = Scorer(tiny_llama, tokenizer)
    one = spread_outcomes(scorer, items, SETS, "tiny", tmp_path / "one", Share(), chunk_items=4)
    assert all(np.array_equal(one[t].pred[set_key(SETS[1])], want[t].pred[set_key(SETS[1])]) for t in items)
    key = cache_key(scorer, "tiny", items["a"], 4)
    assert shard_store(tmp_path, "a", key).read(shard_name(2), key)["item_ids"] == [i.item_id for i in items["a"][8:]]


def test_wait_for_returns_once_nothing_is_missing():
    left = [3]

    def missing() -> int:
        left[0] -= 1
        return left[0]

    wait_for(missing, "things", poll=0.01)
    assert left[0] == 0


def test_spread_options_and_devices():
    assert rank_device("cpu", Share(1, 2)) == "cpu" and rank_device("cuda:1", Share()) == "cuda:1"
    assert rank_devices("cpu", 3) == ["cpu"] * 3
    with pytest.raises(OptionError, match="option processes: must be at least 1"):
        SpreadOptions(processes=0)

    from pudding.cli.eval import EvalOptions

    with pytest.raises(OptionError, match="option device: 'cuda:1' names one device; with processes 2"):
        EvalOptions(processes=2, device="cuda:1")
    assert EvalOptions(processes=2, device="cpu").processes == 2


def fail_on_rank_one(share: Share) -> int:
    """A worker body for the test below: rank 1 meets a bad input, rank 0 would wait for it forever."""
    if share.rank == 1:
        raise OptionError("option x: rank 1 cannot work with this")
    wait_for(lambda: 1, "records that never come", poll=0.1)
    return 0


def crash_on_rank_one(share: Share) -> int:
    if share.rank == 1:
        raise KeyError("a bug")
    return 7


def test_a_worker_error_ends_every_worker_and_is_raised_as_it_is():
    with pytest.raises(OptionError, match="option x: rank 1 cannot work with this"):
        spread(fail_on_rank_one, processes=2)
    with pytest.raises(RuntimeError, match="(?s)worker 1 failed.*KeyError: 'a bug'"):
        spread(crash_on_rank_one, processes=2)
