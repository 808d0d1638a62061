"""Length-grouped batches: every item once per epoch, new order each epoch, equal disjoint shares across ranks."""

from __future__ import annotations

import numpy as np
import pytest

from pudding.router.sampler import LengthGroupedBatchSampler

LENGTHS = np.random.default_rng(0).integers(3, 200, size=300).tolist()


def flat(batches) -> list[int]:
    return [i for b in batches for i in b]


def test_every_item_once_per_epoch_and_a_new_order_each_epoch():
    sampler = LengthGroupedBatchSampler(LENGTHS[:203], batch_size=8, seed=1, window_batches=4, num_replicas=1, rank=0)
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 26  # windows of 32 (6 full + 11 items): 6 × 4 + 2 batches
        assert sorted(flat(batches)) == list(range(203))
        assert all(1 <= len(b) <= 8 for b in batches)
        orders.append(flat(batches))
    assert orders[0] != orders[1] != orders[2] and orders[0] != orders[2]
    sampler.set_epoch(1)
    assert flat(sampler) == orders[1]  # seeded: the same epoch gives the same order
    # Lengths within a batch are close: far smaller spread than random batches of 8 would have.
    spread = np.mean([np.ptp([LENGTHS[i] for i in b]) for b in batches])
    assert spread < 0.3 * np.ptp(LENGTHS)


def test_lightning_set_epoch_reaches_the_sampler_through_its_sampler_attribute():
    sampler = LengthGroupedBatchSampler(LENGTHS, batch_size=8, num_replicas=1, rank=0)
    first = flat(sampler)
    sampler.sampler.set_epoch(5)  # what lightning.fabric's _set_sampler_epoch calls
    assert sampler.epoch == 5 and flat(sampler) != first


@pytest.mark.parametrize("n", [208, 195])  # 26 batches (even split) and 25 (padded by one batch)
def test_two_ranks_get_disjoint_equal_shares(n):
    lengths = LENGTHS[:n]
    ranks = [LengthGroupedBatchSampler(lengths, 8, seed=2, num_replicas=2, rank=r) for r in (0, 1)]
    for s in ranks:
        s.set_epoch(3)
    shares = [list(s) for s in ranks]
    assert len(shares[0]) == len(shares[1]) == len(ranks[0]) == len(ranks[1])
    seen = flat(shares[0]) + flat(shares[1])
    assert set(seen) == set(range(n))
    n_batches = len(ranks[0].all_batches())
    if n_batches % 2 == 0:
        assert sorted(seen) == list(range(n))  # disjoint: nobody sees an item twice
    else:
        assert len(shares[0][-1]) > 0 and len(seen) - n == len(ranks[0].all_batches()[0])  # one batch repeated


def test_evaluation_order_is_by_length_and_unpadded_across_ranks():
    L203 = LENGTHS[:203]
    s = LengthGroupedBatchSampler(L203, 10, shuffle=False, num_replicas=1, rank=0, pad=False)
    order = flat(s)
    assert [L203[i] for i in order] == sorted(L203)
    two = [LengthGroupedBatchSampler(L203, 10, shuffle=False, num_replicas=2, rank=r, pad=False) for r in (0, 1)]
    seen = flat(two[0]) + flat(two[1])
    assert sorted(seen) == list(range(len(L203))) and len(two[0]) == 11 and len(two[1]) == 10


def test_both_branches_of_the_rank_split_are_exercised():
    assert len(LengthGroupedBatchSampler(LENGTHS[:208], 8, num_replicas=1, rank=0).all_batches()) == 26
    assert len(LengthGroupedBatchSampler(LENGTHS[:195], 8, num_replicas=1, rank=0).all_batches()) == 25
