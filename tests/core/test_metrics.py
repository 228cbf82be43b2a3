import math

import numpy as np
import pytest

from edgerec.core import metrics


def test_ranks_hand_computed():
    # items 1..4; column 0 is padding
    scores = np.array([[0.0, 0.9, 0.5, 0.7, 0.1], [0.0, 0.2, 0.2, 0.2, 0.9]])
    ranks = metrics.target_ranks(scores, [3, 2], num_items=4, mask_history=False)
    # row 0: only item 1 beats item 3 -> rank 1; row 1: item 4 beats it, item 1 ties with a
    # smaller index -> ranked ahead; item 3 ties with a larger index -> behind: rank 2
    assert ranks.tolist() == [1, 2]


def test_history_is_masked_but_never_the_target():
    scores = np.array([[0.0, 0.9, 0.5, 0.7, 0.1]])
    assert metrics.target_ranks(scores, [3], 4, histories=[[1]]).tolist() == [0]
    assert metrics.target_ranks(scores, [3], 4, histories=[[1]], mask_history=False).tolist() == [1]
    # a target that is also in the history keeps its own score
    assert metrics.target_ranks(scores, [3], 4, histories=[[3, 1]]).tolist() == [0]


def test_columns_beyond_the_catalogue_are_ignored():
    scores = np.array([[5.0, 0.1, 0.2, 9.0]])  # col 0 = pad, col 3 = mask token
    assert metrics.target_ranks(scores, [2], num_items=2).tolist() == [0]


def test_per_user_metrics_values():
    per = metrics.per_user_metrics(np.array([0, 4, 9, 10, 30]))
    assert per["HR@1"].tolist() == [1, 0, 0, 0, 0]
    assert per["HR@5"].tolist() == [1, 1, 0, 0, 0]
    assert per["HR@10"].tolist() == [1, 1, 1, 0, 0]
    assert per["HR@20"].tolist() == [1, 1, 1, 1, 0]
    assert per["NDCG@10"][0] == pytest.approx(1.0)
    assert per["NDCG@10"][1] == pytest.approx(1 / math.log2(6))
    assert per["NDCG@10"][2] == pytest.approx(1 / math.log2(11))
    assert per["NDCG@10"][3] == 0.0
    assert per["NDCG@5"][2] == 0.0
    assert per["MRR"].tolist() == pytest.approx([1, 1 / 5, 1 / 10, 1 / 11, 1 / 31])


def test_top_k_order_ties_and_masking():
    scores = np.array([[0.0, 0.5, 0.9, 0.5, 0.5, 0.1]])
    assert metrics.top_k(scores, 3, 5, mask_history=False).tolist() == [[2, 1, 3]]
    assert metrics.top_k(scores, 3, 5, histories=[[2]]).tolist() == [[1, 3, 4]]
    assert metrics.top_k(scores, 10, 5, mask_history=False).shape == (1, 5)


def test_top_k_agrees_with_ranks():
    rng = np.random.default_rng(1)
    scores = np.round(rng.random((20, 31)), 1)  # many ties
    top = metrics.top_k(scores, 5, 30, mask_history=False)
    for row in range(20):
        for position, item in enumerate(top[row]):
            assert metrics.target_ranks(scores[row : row + 1], [item], 30, mask_history=False)[0] == position


def test_agreement():
    a = np.array([[1, 2, 3, 4], [1, 2, 3, 4]])
    b = np.array([[4, 3, 9, 8], [1, 2, 3, 4]])
    assert metrics.topk_agreement(a, b).tolist() == [0.5, 1.0]


def test_bootstrap_interval_contains_mean_and_narrows_with_n():
    rng = np.random.default_rng(0)
    small = rng.random(50) < 0.1
    large = rng.random(5000) < 0.1
    m, lo, hi = metrics.bootstrap_interval(small.astype(float))
    assert lo <= m <= hi
    m2, lo2, hi2 = metrics.bootstrap_interval(large.astype(float))
    assert hi2 - lo2 < hi - lo


def test_paired_bootstrap_detects_a_real_difference_and_not_noise():
    rng = np.random.default_rng(0)
    base = rng.random(900)
    better = metrics.paired_bootstrap(base + 0.05, base)
    assert better["diff"] == pytest.approx(0.05)
    assert better["ci95"][0] > 0 and better["p_value"] < 0.01
    noise = metrics.paired_bootstrap(base + rng.normal(0, 0.1, 900), base)
    assert noise["ci95"][0] < 0 < noise["ci95"][1]


def test_beyond_accuracy_hand_computed():
    from edgerec.core.metrics import beyond_accuracy, gini, item_popularity

    # 5 items; training popularity: item 1 x4, 2 x3, 3 x2, 4 x1, 5 x0
    popularity = item_popularity([[1, 2, 3, 4], [1, 2, 3], [1, 2], [1]], 5)
    assert popularity.tolist() == [0, 4, 3, 2, 1, 0]
    top = np.array([[1, 2], [1, 3], [1, 5]])  # three users, top-2
    figures = beyond_accuracy(top, popularity)
    assert figures["coverage"] == pytest.approx(4 / 5)  # items 1, 2, 3, 5 (not 4)
    assert figures["mean_popularity"] == pytest.approx((4 + 3 + 4 + 2 + 4 + 0) / 6)
    # counts over items 1..5 = [3, 1, 1, 0, 1] -> sorted [0, 1, 1, 1, 3], n = 5, total = 6
    expected_gini = sum((2 * i - 5 - 1) * x for i, x in enumerate([0, 1, 1, 1, 3], start=1)) / (5 * 6)
    assert figures["gini"] == pytest.approx(expected_gini) and figures["gini"] == pytest.approx(12 / 30)
    # head = top 20% of 5 items = 1 item (item 1); the tail got 3 of 6 recommendations
    assert figures["tail_share"] == pytest.approx(3 / 6)
    assert gini(np.array([2, 2, 2])) == 0.0 and gini(np.array([0, 0, 6])) == pytest.approx(2 / 3)


def test_paired_half_sample_of_coverage():
    from edgerec.core.metrics import paired_half_sample

    popularity = np.array([0, 9, 8, 7, 6, 5, 4, 3, 2])
    wide = np.array([[1, 2], [3, 4], [5, 6], [7, 8]] * 5)  # 8 distinct items
    narrow = np.array([[1, 2]] * 20)  # 2 distinct items
    result = paired_half_sample(wide, narrow, popularity, n=200)
    assert result["diff"] == pytest.approx(6 / 8)
    assert result["share_of_halves_above_zero"] == 1.0 and result["half_sample_range95"][0] > 0
