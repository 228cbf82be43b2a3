"""The synthetic catalogue generator and its oracle."""

import numpy as np
import pytest

from edgerec.core import synthetic
from edgerec.core.errors import EdgerecError
from edgerec.stages.data import make_data


def _brute_force_ranks(log):
    """Rank of each user's last item under the true probability, every item scored."""
    cfg = log.config
    occurs = np.zeros(cfg.items, bool)
    occurs[np.unique(log.items)] = True
    topic_weight = np.bincount(log.topic_of, weights=log.weight, minlength=cfg.topics)
    bounds = np.r_[0, np.flatnonzero(np.diff(log.users)) + 1, len(log.users)]
    ranks = []
    for u in range(cfg.users):
        seq = log.items[bounds[u] : bounds[u + 1]]
        history, target = seq[:-1], seq[-1]
        c = np.zeros(cfg.topics)
        c[log.last_topic[u]] += 1 - cfg.drift
        np.add.at(c, log.shares_topics[u], cfg.drift * log.shares[u])
        p = (1 - cfg.repeat) * c[log.topic_of] * log.weight / topic_weight[log.topic_of]
        window = history[-cfg.window :]
        p = p + cfg.repeat * np.bincount(window, minlength=cfg.items) / len(window)
        p[~occurs] = -np.inf
        p[history[history != target]] = -np.inf
        ranks.append(int((p > p[target]).sum()))
    return np.array(ranks)


def test_oracle_counts_the_same_ranks_as_scoring_every_item():
    log = synthetic.generate(synthetic.SyntheticConfig(items=600, users=80, mean_length=12, items_per_topic=50))
    ranks = _brute_force_ranks(log)
    ndcg = np.where(ranks < 10, 1 / np.log2(ranks + 2.0), 0.0).mean()
    oracle = synthetic.oracle_metrics(log)
    assert oracle["NDCG@10"] == pytest.approx(ndcg, abs=1e-12)
    assert oracle["HR@10"] == pytest.approx((ranks < 10).mean())
    assert 0.05 < oracle["NDCG@10"] < 0.9  # structure a model can learn, and not trivial


def test_generator_is_long_tailed_sequential_and_seeded():
    cfg = synthetic.SyntheticConfig(items=2000, users=300, mean_length=30, items_per_topic=100)
    log = synthetic.generate(cfg)
    again = synthetic.generate(cfg)
    assert np.array_equal(log.items, again.items) and np.array_equal(log.times, again.times)
    counts = np.sort(np.bincount(log.items, minlength=cfg.items))[::-1]
    assert counts[: cfg.items // 100].sum() > 0.1 * counts.sum()  # top 1% of items: >10% of plays
    same_topic = log.topic_of[log.items[1:]] == log.topic_of[log.items[:-1]]
    same_user = log.users[1:] == log.users[:-1]
    assert same_topic[same_user].mean() > 0.6  # topics persist within a user's sequence
    per_user = np.diff(np.r_[0, np.flatnonzero(np.diff(log.users)) + 1, len(log.users)])
    assert per_user.min() >= cfg.min_length
    assert all(np.all(np.diff(log.times[log.users == u]) > 0) for u in range(0, 300, 37))


def test_data_artifact_from_synthetic_says_so(tmp_path):
    manifest = make_data(tmp_path / "data", synthetic=synthetic.SyntheticConfig.parse("500x60", mean_length=10))
    assert manifest["synthetic"]["synthetic"] is True
    assert manifest["synthetic"]["items"] == 500 and manifest["counts"]["users"] == 60
    assert 0 < manifest["synthetic"]["oracle_test"]["NDCG@10"] <= 1


@pytest.mark.parametrize("spec", ["100000", "ax3", "5x1"])
def test_bad_synthetic_spec_is_one_clear_error(spec):
    with pytest.raises(EdgerecError):
        synthetic.SyntheticConfig.parse(spec)
