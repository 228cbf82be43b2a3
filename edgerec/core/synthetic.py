"""A synthetic catalogue-scale interaction log whose true next-item distribution is known.

No real data set of 10^5-10^6 items can be downloaded here, so catalogue-scale builds run on this
generator. It is synthetic, and every artifact made from it says so (`synthetic` in the data
manifest). The generating process, per user:

- **Items and popularity.** `items` items fall into `topics` latent topics (about 500 items
  each). Item i's weight is a power law in its global popularity rank, w_i = rank_i^-`zipf`,
  so item popularity is long-tailed.
- **Tastes.** Each user likes `user_topics` topics, drawn by topic weight, with Dirichlet(1)
  shares s_k over them.
- **Sequential structure.** A user's current topic z_t drifts: it stays z_{t-1} with probability
  1 - `drift`, else it is redrawn from the user's shares. The item at step t is drawn from z_t
  in proportion to w_i (`P(i | z) = w_i / W_z`).
- **Repeats.** With probability `repeat` (once the user has a history) the item is instead one
  of the user's last `window` items, uniformly.
- **Time.** Steps are 30-600 s apart; a topic change starts a new session 1-72 h later.

Because the process is known, the best any model can do on the test target (each user's last
item, as `edgerec data` splits) is to rank items by the true probability given the hidden state
before that step: P(i) = (1 - repeat) sum_k c_k w_i / W_k + repeat * (copies of i in the
window) / window, with c_k = (1 - drift) [k = z_{T-1}] + drift * s_k. `oracle_metrics` computes
that ranking's NDCG@10 and HR@10 with the evaluator's protocol (full catalogue of the items that
occur, history masked but the target) by counting, per topic, the items above the target with a
binary search, so it costs O(users x topics x log items) instead of users x items.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from edgerec.core.errors import EdgerecError


@dataclass(frozen=True)
class SyntheticConfig:
    items: int = 100_000
    users: int = 100_000
    mean_length: int = 50  # interactions per user (geometric, at least min_length)
    min_length: int = 5
    zipf: float = 1.0
    items_per_topic: int = 500
    user_topics: int = 5
    drift: float = 0.15
    repeat: float = 0.05
    window: int = 10
    seed: int = 0

    @property
    def topics(self) -> int:
        return max(1, math.ceil(self.items / self.items_per_topic))

    def validate(self) -> None:
        if not (10 <= self.items <= 10**8 and 1 <= self.users <= 10**8):
            raise EdgerecError("a synthetic data set needs 10 to 10^8 items and 1 to 10^8 users")
        if self.min_length < 3 or self.mean_length < self.min_length:
            raise EdgerecError("synthetic lengths: need 3 <= min_length <= mean_length")
        for name in ("drift", "repeat"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise EdgerecError(f"synthetic {name} must be in [0, 1]")

    @classmethod
    def parse(cls, spec: str, **overrides) -> SyntheticConfig:
        """'ITEMSxUSERS', e.g. '100000x100000' or '1e6x2e5'."""
        try:
            items, users = (int(float(part)) for part in spec.lower().split("x"))
        except (ValueError, OverflowError):
            raise EdgerecError(f"--synthetic '{spec}': expected ITEMSxUSERS, for example 100000x100000") from None
        config = cls(items=items, users=users, **overrides)
        config.validate()
        return config


@dataclass
class SyntheticLog:
    users: np.ndarray  # per interaction, int
    items: np.ndarray  # per interaction, 0-based generated item id
    times: np.ndarray  # per interaction, Unix seconds
    topic_of: np.ndarray  # per item
    weight: np.ndarray  # per item, w_i
    last_topic: np.ndarray  # per user, z_{T-1} (the state before the last item)
    shares_topics: np.ndarray  # [users, user_topics]
    shares: np.ndarray  # [users, user_topics]
    config: SyntheticConfig

    def frame(self):
        import pandas as pd

        return pd.DataFrame(
            {
                "user": np.char.add("u", self.users.astype(str)),
                "item": np.char.add("i", self.items.astype(str)),
                "timestamp": self.times,
            }
        )


def _catalogue(rng, config: SyntheticConfig):
    """Item popularity (Zipf over a random permutation) and topics, and one cdf to draw an item
    of a given topic by popularity."""
    n_topics = config.topics
    # popularity rank -> item id is a random permutation, so ids carry no information
    weight = np.empty(config.items)
    weight[rng.permutation(config.items)] = np.arange(1, config.items + 1, dtype=np.float64) ** -config.zipf
    topic_of = rng.integers(0, n_topics, size=config.items)
    # items grouped by topic; a global cdf where topic k's part spans [k, k + 1)
    by_topic = np.argsort(topic_of, kind="stable")
    starts = np.searchsorted(topic_of[by_topic], np.arange(n_topics + 1))
    cdf = np.empty(config.items)
    topic_weight = np.zeros(n_topics)
    for k in range(n_topics):
        part = weight[by_topic[starts[k] : starts[k + 1]]]
        topic_weight[k] = part.sum()
        cdf[starts[k] : starts[k + 1]] = k + np.cumsum(part) / max(part.sum(), 1e-300)
    return weight, topic_of, by_topic, cdf, topic_weight


def generate(config: SyntheticConfig) -> SyntheticLog:
    """Draw the log, vectorised over users one step at a time."""
    config.validate()
    rng = np.random.default_rng(config.seed)
    n_topics = config.topics
    weight, topic_of, by_topic, cdf, topic_weight = _catalogue(rng, config)

    m = min(config.user_topics, n_topics)
    p_topic = topic_weight / topic_weight.sum()
    liked = np.stack([rng.choice(n_topics, size=m, replace=False, p=p_topic) for _ in range(config.users)])
    shares = rng.dirichlet(np.ones(m), size=config.users)
    lengths = config.min_length + rng.geometric(1.0 / (config.mean_length - config.min_length + 1), config.users) - 1

    def redraw(rows):
        pick = (rng.random(len(rows))[:, None] > np.cumsum(shares[rows], axis=1)).sum(axis=1)
        return liked[rows, np.minimum(pick, m - 1)]

    everyone = np.arange(config.users)
    z = redraw(everyone)
    clock = rng.integers(1_600_000_000, 1_700_000_000, size=config.users).astype(np.int64)
    recent = np.full((config.users, config.window), -1, dtype=np.int64)
    out_u, out_i, out_t = [], [], []
    last_topic = z.copy()
    for step in range(int(lengths.max())):
        alive = everyone[lengths > step]
        last_topic[alive] = z[alive]
        moves = alive[rng.random(len(alive)) < config.drift]
        new_z = redraw(moves)
        changed = moves[new_z != z[moves]]
        z[moves] = new_z
        item = by_topic[np.minimum(np.searchsorted(cdf, z[alive] + rng.random(len(alive))), config.items - 1)]
        if step > 0 and config.repeat > 0:
            rep = rng.random(len(alive)) < config.repeat
            filled = np.minimum(step, config.window)
            slot = (rng.random(len(alive)) * filled).astype(np.int64)
            item = np.where(rep, recent[alive, slot], item)
        gap = rng.integers(30, 601, size=len(alive))
        new_session = np.isin(alive, changed)
        gap[new_session] += rng.integers(3_600, 72 * 3_600, size=int(new_session.sum()))
        clock[alive] += gap
        recent[alive, step % config.window] = item
        out_u.append(alive)
        out_i.append(item)
        out_t.append(clock[alive].copy())
    users = np.concatenate(out_u)
    order = np.lexsort((np.concatenate(out_t), users))
    return SyntheticLog(
        users=users[order],
        items=np.concatenate(out_i)[order],
        times=np.concatenate(out_t)[order],
        topic_of=topic_of,
        weight=weight,
        last_topic=last_topic,
        shares_topics=liked,
        shares=shares,
        config=config,
    )


def oracle_metrics(log: SyntheticLog) -> dict:
    """NDCG@10 / HR@10 of ranking by the true next-item probability, on each user's last item."""
    cfg = log.config
    n_topics = cfg.topics
    seen_items = np.unique(log.items)  # the catalogue `edgerec data` will have
    occurs = np.zeros(cfg.items, bool)
    occurs[seen_items] = True
    topic_weight = np.bincount(log.topic_of, weights=log.weight, minlength=n_topics)  # W_k over all items
    sorted_w = [np.sort(log.weight[occurs & (log.topic_of == k)]) for k in range(n_topics)]
    bounds = np.r_[0, np.flatnonzero(np.diff(log.users)) + 1, len(log.users)]
    ranks = np.empty(cfg.users, np.int64)
    for u in range(cfg.users):
        seq = log.items[bounds[u] : bounds[u + 1]]
        history, target = seq[:-1], int(seq[-1])
        c = {int(log.last_topic[u]): 1 - cfg.drift}
        for k, s in zip(log.shares_topics[u], log.shares[u]):
            c[int(k)] = c.get(int(k), 0.0) + cfg.drift * float(s)
        rep = cfg.repeat if len(history) else 0.0

        def base(i, c=c, rep=rep):
            k = int(log.topic_of[i])
            return (1 - rep) * c.get(k, 0.0) * log.weight[i] / topic_weight[k]

        window = history[-cfg.window :]
        p_target = base(target) + rep * float(np.count_nonzero(window == target)) / max(1, len(window))
        above = 0
        for k, ck in c.items():
            if ck <= 0:
                continue
            # items of topic k with (1 - rep) c_k w / W_k > p_target
            # (1 + 1e-9): the target's own weight, recomputed, must not count as above itself
            threshold = p_target * topic_weight[k] / ((1 - rep) * ck) * (1 + 1e-9) if rep < 1 else math.inf
            above += len(sorted_w[k]) - int(np.searchsorted(sorted_w[k], threshold, side="right"))
        masked = np.unique(history[history != target])  # masked history items never rank above
        above -= int(sum(base(i) > p_target for i in masked))
        ranks[u] = above
    ndcg = np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0)
    return {"NDCG@10": float(ndcg.mean()), "HR@10": float((ranks < 10).mean()), "users": cfg.users}


def describe(config: SyntheticConfig) -> dict:
    return {"synthetic": True, "generator": "edgerec.core.synthetic", **asdict(config), "topics": config.topics}
