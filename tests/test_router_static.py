import numpy as np
import pytest

from pudding.router.static import best_static_index


def test_best_static_is_highest_column_mean_over_finite_rows():
    scores = np.array([[-1.0, -2.0, -0.5], [-3.0, -1.0, -2.9], [np.nan, 10.0, -1.0]])
    # finite rows: means are -2.0, -1.5, -1.7 → column 1 (the NaN row, which would favour column 1 more, is ignored)
    assert best_static_index(scores) == 1
    assert best_static_index(scores[:1]) == 2


def test_best_static_rejects_empty_or_all_nonfinite():
    with pytest.raises(ValueError, match="non-empty"):
        best_static_index(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="finite"):
        best_static_index(np.array([[np.inf, 1.0]]))


def test_best_static_by_depth_is_the_argmax_within_each_depth():
    from pudding.router.static import best_static_by_depth

    sets = [[1], [2, 3], [4], [1, 2], [1, 2, 3]]
    scores = np.array([[-1.0, -2.0, -0.9, -2.5, -3.0], [-1.2, -2.2, -1.5, -1.9, -3.5]])
    # depth 1: columns 0 (-1.1) and 2 (-1.2) → 0; depth 2: columns 1 (-2.1) and 3 (-2.2) → 1; depth 3: column 4
    assert best_static_by_depth(scores, sets) == {1: 0, 2: 1, 3: 4}
    assert best_static_index(scores) == 0
    with pytest.raises(ValueError, match="5 omission sets for scores of shape"):
        best_static_by_depth(scores[:, :4], sets)
