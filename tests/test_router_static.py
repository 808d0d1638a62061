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
