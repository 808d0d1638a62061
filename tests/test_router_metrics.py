"""Router metrics on hand-computed tensors, their sum states (DDP reduction), and the reference regrets."""

from __future__ import annotations

import pytest
import torch

from pudding.router.metrics import (
    AccuracyRegret,
    ChoiceHistogram,
    GainVsStatic,
    Regret,
    RouterMSE,
    SelectionAccuracy,
    make_metrics,
    reference_regrets,
    update_metrics,
)

# Three items, K = 3. Chosen (argmax of preds): 0, 2, 1. Best by raw score: 0, 1, and 1 or 2 (a tie) for item 2.
PREDS = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.2, 0.5], [0.1, 0.7, 0.3]])
TARGETS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
SCORES = torch.tensor([[-1.0, -2.0, -3.0], [-2.0, -1.0, -1.5], [-3.0, -2.5, -2.5]])


def update(metric, *batches):
    for preds, targets, scores in batches:
        metric.update(preds, targets, scores)
    return metric


def value(metric, *batches) -> torch.Tensor:
    return update(metric, *batches).compute()


def test_each_metric_on_hand_computed_values():
    # squared errors: item0 .01+.01+0, item1 0+.04+.25, item2 .01+.09+.09 → 0.5 over 9 cells
    assert float(value(RouterMSE(), (PREDS, TARGETS, SCORES))) == pytest.approx(0.5 / 9)
    # chosen raw: -1.0 (best -1.0), -1.5 (best -1.0), -2.5 (best -2.5, tied with candidate 2: counts as correct)
    assert float(value(SelectionAccuracy(), (PREDS, TARGETS, SCORES))) == pytest.approx(2 / 3)
    assert float(value(Regret(), (PREDS, TARGETS, SCORES))) == pytest.approx((0 + 0.5 + 0) / 3)
    # best static column 1: raw -2.0, -1.0, -2.5 → gains +1.0, -0.5, 0.0
    assert float(value(GainVsStatic(best_static=1), (PREDS, TARGETS, SCORES))) == pytest.approx(0.5 / 3)
    assert value(ChoiceHistogram(3), (PREDS, TARGETS, SCORES)).tolist() == [1, 1, 1]


def test_batches_accumulate_as_one_and_states_are_sums():
    one = Regret()
    split = Regret()
    value(one, (PREDS, TARGETS, SCORES))
    value(split, (PREDS[:1], TARGETS[:1], SCORES[:1]), (PREDS[1:], TARGETS[1:], SCORES[1:]))
    assert float(one.compute()) == pytest.approx(float(split.compute()))
    for metric in (RouterMSE(), SelectionAccuracy(), Regret(), GainVsStatic(0), ChoiceHistogram(3)):
        assert {fn.__name__ for fn in metric._reductions.values()} == {"dim_zero_sum"}  # DDP sums every state


def test_two_ranks_merged_equal_one_process():
    """What DDP's sum reduction does, emulated by merging the states of two metrics that saw half the data each."""
    rank0, rank1, single = Regret(), Regret(), Regret()
    update(rank0, (PREDS[:2], TARGETS[:2], SCORES[:2]))
    update(rank1, (PREDS[2:], TARGETS[2:], SCORES[2:]))
    update(single, (PREDS, TARGETS, SCORES))
    rank0.merge_state(rank1)
    assert float(rank0.compute()) == pytest.approx(float(single.compute()))
    h0, h1 = ChoiceHistogram(3), ChoiceHistogram(3)
    update(h0, (PREDS[:2], TARGETS[:2], SCORES[:2]))
    update(h1, (PREDS[2:], TARGETS[2:], SCORES[2:]))
    h0.merge_state(h1)
    assert h0.compute().tolist() == [1, 1, 1]


def test_reference_regrets():
    refs = reference_regrets(SCORES, best_static=1)
    # best static (column 1): 1.0, 0.0, 0.0; random: max − mean = 1.0, 0.5, 1/6
    assert refs["regret_best_static"] == pytest.approx(1 / 3)
    assert refs["regret_random"] == pytest.approx((1.0 + 0.5 + 1 / 6) / 3)


def test_accuracy_regret_counts_items_some_choice_gets_right_but_the_chosen_one_does_not():
    # chosen 0, 2, 1; item 0: chosen right; item 1: only choice 1 right (chosen 2: regret 1); item 2: none right
    correct = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    metric = AccuracyRegret()
    metric.update(PREDS, TARGETS, SCORES)  # the signature every metric shares: without correctness, nothing added
    metric.update(PREDS, TARGETS, SCORES, correct)
    assert float(metric.compute()) == pytest.approx(1 / 3)
    assert {fn.__name__ for fn in metric._reductions.values()} == {"dim_zero_sum"}
    group = make_metrics(3, best_static=1)
    update_metrics(group, PREDS, TARGETS, SCORES)  # no correctness (a gold-only dataset): left alone
    assert not group["regret_acc"].update_called and group["regret"].update_called
    update_metrics(group, PREDS, TARGETS, SCORES, correct)
    assert float(group["regret_acc"].compute()) == pytest.approx(1 / 3)
    assert float(group["regret"].compute()) == pytest.approx(0.5 / 3)  # two updates of the same rows
