"""Recommendations and explanations from a bundle alone (the model file, items.json,
metadata.json), through the target's runtime: what `edgerec recommend` and a notebook use.

An explanation ranks the history items by how much each one contributed to a recommended item's
score: the score drop when that item is left out of the history (leave-one-out, one extra forward
pass per history item, batched in one call for ONNX). Cheap for a small student, exact for the
model as shipped, and an app can do the same with its runtime alone (examples/app.py does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgerec.core import metrics
from edgerec.core.errors import EdgerecError
from edgerec.core.files import read_bundle, read_json
from edgerec.core.signing import verify_bundle
from edgerec.formats import FORMATS


class Recommender:
    """A bundle as an app sees it: its files checked (and its signature, with `public_key`),
    its model opened on the runtime an app would use, and `recommend(history, k)` answered in
    your item ids, items already in the history left out.

    Examples:
        The int8 bundle made by `edgerec.quantize` above:

        >>> recommender = edgerec.Recommender(work / "dist" / "arm64-int8")
        >>> history = [recommender.items[0]["id"], recommender.items[1]["id"]]
        >>> rows = recommender.recommend(history, k=3)
        >>> len(rows), history[0] in [row["item"] for row in rows]
        (3, False)
    """

    def __init__(
        self,
        bundle: Path,
        threads: int = 1,
        allow_modified: bool = False,
        public_key: Path | None = None,
        installed: Path | int | None = None,
    ):
        """Every bundle file is checked against metadata.json's hashes first; `allow_modified`
        lets changed files through (listed in `self.modified`). With `public_key`, the bundle's
        signature and version (not older than `installed`) are checked before that
        (`edgerec.core.signing.verify_bundle`); `self.release` is then its release record."""
        bundle = Path(bundle)
        self.release = verify_bundle(bundle, public_key, installed=installed) if public_key is not None else None
        self.meta, self.modified = read_bundle(bundle, allow_modified=allow_modified)
        self.items = read_json(bundle / "items.json", "the bundle's item list")
        self.index_of = {str(entry["id"]): i + 1 for i, entry in enumerate(self.items)}
        files = self.meta.get("files", {})
        fmt = next((name for name in FORMATS if name in files), None)  # the first the bundle has
        if fmt is None:
            raise EdgerecError(f"{bundle}: no model file in metadata.json")
        self.scorer = FORMATS[fmt].open_bundle_file(bundle / files[fmt], self.meta, threads)
        if self.meta.get("top_k"):
            raise EdgerecError(f"{bundle}: exported with in-graph top-K; export without --top-k for explanations")

    def indices(self, history_ids) -> list[int]:
        """The model indices (1..N) of your item ids, checked: one line for an empty history or
        an id the catalogue does not have."""
        history_ids = [str(i) for i in history_ids]
        if not history_ids:
            raise EdgerecError("the history is empty: give at least one item id")
        unknown = [i for i in history_ids if i not in self.index_of]
        if unknown:
            raise EdgerecError(f"{len(unknown)} item ids are not in the catalogue (e.g. {unknown[0]!r})")
        return [self.index_of[i] for i in history_ids]

    def recommend(
        self,
        history_ids,
        k: int = 10,
        explain: bool = False,
        reasons: int = 3,
        allowed=None,
        excluded=None,
        boost: dict | None = None,
    ) -> list[dict]:
        """The k best items not in the history, best first (fewer when fewer are left: see
        `candidates`); with `explain`, each gets its top history items by contribution (score
        drop when left out).

        Business rules, as the bundle's rules entry point applies them in the graph: `allowed`
        (item ids; None = every item) and `excluded` (item ids) restrict what may come back,
        and `boost` ({item id: value}) is added to those items' scores first. The list is then
        exactly the k best of what is left."""
        history = self.indices(history_ids)
        masked = self._masked(history, allowed, excluded)
        window = history[-self.meta["max_len"] :]  # what the model reads
        variants = [history] + ([window[:j] + window[j + 1 :] for j in range(len(window))] if explain else [])
        scores = self.scorer.scores(variants)
        if boost:  # every variant alike, so that an explanation's score drops stay the model's
            scores[:, self.indices(list(boost))] += np.asarray(list(boost.values()), np.float32)
        top = metrics.top_k(scores[:1], k, self.meta["num_items"], [masked])[0]
        out = []
        for index in top[top > 0]:  # 0 = no candidate left
            entry = self.items[index - 1]
            row = {"item": entry["id"], "index": int(index), "score": float(scores[0, index])}
            if "title" in entry:
                row["title"] = entry["title"]
            if explain:
                drops = scores[0, index] - scores[1:, index]  # per left-out history position
                order = np.argsort(-drops, kind="stable")[:reasons]
                row["because"] = [
                    {
                        "item": self.items[window[j] - 1]["id"],
                        "title": self.items[window[j] - 1].get("title"),
                        "contribution": float(drops[j]),
                    }
                    for j in order
                ]
            out.append(row)
        return out

    def candidates(self, history_ids, allowed=None, excluded=None) -> int:
        """How many items can be recommended after this history: the catalogue less the distinct
        items in it (and less what the rules leave out)."""
        masked = self._masked(self.indices(history_ids), allowed, excluded)
        return int(metrics.candidate_counts(self.meta["num_items"], [masked])[0])

    def _masked(self, history: list[int], allowed, excluded) -> list[int]:
        """The indices never to recommend: the history, items outside `allowed`, `excluded`."""
        masked = list(history)
        if allowed is not None:
            keep = set(self.indices(allowed)) if len(allowed) else set()
            masked += [i for i in range(1, self.meta["num_items"] + 1) if i not in keep]
        if excluded:
            masked += self.indices(excluded)
        return masked
