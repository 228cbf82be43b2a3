"""Top-K is right for every k and every history: property tests against a brute-force reference,
for the Python path (`metrics.top_k`, what validate and `recommend` use) and for the in-graph
top-K as exported to ONNX (ONNX Runtime) and TFLite (LiteRT).

The properties: no padding (index 0) and no masked item among the results; scores in descending
order; exactly min(k, candidates) results, the rest of a fixed-shape row empty (index 0); and the
same items as the reference, up to the order of equal scores.

EDGEREC_TOPK_EXAMPLES sets the examples per property (CI: 400; the issue's check: 10000).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgerec.core import metrics

EXAMPLES = int(os.environ.get("EDGEREC_TOPK_EXAMPLES", "400"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def reference(scores: np.ndarray, k: int, masked: set[int]) -> list[tuple[int, float]]:
    """(item, score) of the k best items 1..n not masked, best first, ties to the smaller index."""
    ranked = sorted(((-float(s), j + 1) for j, s in enumerate(scores) if j + 1 not in masked))
    return [(item, -neg) for neg, item in ranked[:k]]


def check(items, got_scores, scores: np.ndarray, k: int, masked: set[int]) -> None:
    """`items` (and their `got_scores`, when the producer returns them) against the reference."""
    items = [int(i) for i in items]
    expected = reference(scores, k, masked)
    real = [i for i in items if i != 0]
    assert items[: len(real)] == real, f"an empty slot before a real item: {items}"
    assert len(real) == len(expected), f"{len(real)} items, {len(expected)} candidates for k={k}"
    assert not set(real) & masked, f"masked item returned: {set(real) & masked}"
    assert len(set(real)) == len(real), f"an item twice: {items}"
    own = [float(scores[i - 1]) for i in real]
    assert own == [s for _, s in expected], f"scores {own} != reference {[s for _, s in expected]}"
    if got_scores is not None:
        got = [float(s) for s in got_scores]
        assert got[: len(real)] == own, "returned scores are not the items' scores"
        assert all(s == -np.inf for s in got[len(real) :]), f"empty slots must score -inf: {got}"
    # equal scores may come in any order, but the set at each score is the reference's
    for value in set(own):
        assert {i for i in real if scores[i - 1] == value} <= {
            i for i, s in reference(scores, len(scores), masked) if s == value
        }


def score_rows(n: int):
    """Scores with ties on purpose: small integers or arbitrary float32 values."""
    tied = st.lists(st.integers(-3, 3).map(float), min_size=n, max_size=n)
    # (no subnormals: XNNPACK flushes them to zero, a property of the float kernels, not of top-K)
    free = st.lists(st.floats(-60, 60, width=32, allow_subnormal=False), min_size=n, max_size=n)
    return st.one_of(tied, free).map(lambda v: np.asarray(v, dtype=np.float32))


@st.composite
def python_cases(draw):
    n = draw(st.integers(1, 30))
    k = draw(st.integers(1, 40))
    scores = draw(score_rows(n))
    history = draw(st.lists(st.integers(0, n), max_size=2 * n + 2))  # repeats and padding too
    return n, k, scores, history


@SETTINGS
@given(python_cases())
def test_python_top_k_matches_the_brute_force_reference(case):
    n, k, scores, history = case
    full = np.concatenate([[np.float32(7.0)], scores])[None, :]  # column 0 = padding, never an item
    top = metrics.top_k(full, k, n, [history])[0]
    assert top.shape == (min(k, n),)
    masked = {i for i in history if i != 0}
    check(top, None, scores, k, masked)
    assert metrics.candidate_counts(n, [history])[0] == n - len(masked)


def test_python_top_k_without_masking_still_skips_padding():
    full = np.array([[100.0, 1.0, 2.0]])
    assert metrics.top_k(full, 5, 2, [[1]], mask_history=False).tolist() == [[2, 1]]


# ------------------------------------------------------------------ the exported graphs

# (catalogue, window, K): K above the unseen items left, K = the catalogue, a catalogue smaller
# than the window, and a comfortable case.
GRAPHS = [(5, 4, 5), (3, 6, 3), (12, 6, 4), (9, 3, 8)]


class _TopKOnly:
    """`top_k_unseen` as a module with the scores as an input, so every score row can be tried;
    with `rules`, also the per-call `allowed` and `boost` inputs of the rules entry point."""

    def __new__(cls, k: int, rules: bool = False):
        import torch

        from edgerec.core.graphs import top_k_unseen

        class TopK(torch.nn.Module):
            def forward(self, item_scores, history):
                return top_k_unseen(item_scores, history, k)

        class RuledTopK(torch.nn.Module):
            def forward(self, item_scores, history, allowed, boost):
                return top_k_unseen(item_scores, history, k, allowed, boost)

        return (RuledTopK() if rules else TopK()).eval()


def _examples(n, window, batch, ids, rules):
    import torch

    inputs = {"item_scores": torch.zeros(batch, n), "history": torch.zeros(batch, window, dtype=ids)}
    if rules:
        inputs.update(allowed=torch.ones(batch, n, dtype=torch.uint8), boost=torch.zeros(batch, n))
    return inputs


def _feeds(s, h, ids, rules):
    feeds = {"item_scores": s[None], "history": np.asarray(h, ids)[None]}
    if rules:
        feeds.update(allowed=rules[0][None], boost=rules[1][None])
    return feeds


def _onnx_runner(path_dir, n, window, k, rules=False):
    import onnxruntime as ort
    import torch

    from edgerec.formats.onnx.export import write_onnx

    path = path_dir / f"topk-{n}-{window}-{k}-{rules}.onnx"
    write_onnx(_TopKOnly(k, rules), _examples(n, window, 2, torch.int64, rules), ["items", "scores"], path, 17, {})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda s, h, r=None: session.run(None, _feeds(s, h, np.int64, r))


def _tflite_runner(path_dir, n, window, k, rules=False):
    import torch
    from ai_edge_litert.interpreter import Interpreter

    from edgerec.formats.tflite.export import write_tflite

    path = path_dir / f"topk-{n}-{window}-{k}-{rules}.tflite"
    write_tflite(_TopKOnly(k, rules), _examples(n, window, 1, torch.int32, rules), path)
    runner = Interpreter(model_path=str(path)).get_signature_runner()

    def run(s, h, r=None):
        out = runner(**_feeds(s, h, np.int32, r))
        return out["output_0"], out["output_1"]

    return run


@pytest.fixture(scope="module")
def runners(tmp_path_factory):
    folder = tmp_path_factory.mktemp("topk")
    return {
        (fmt, shape, rules): make(folder, *shape, rules)
        for fmt, make in (("onnx", _onnx_runner), ("tflite", _tflite_runner))
        for shape in GRAPHS
        for rules in (False, True)
    }


@st.composite
def graph_cases(draw):
    n, window, k = draw(st.sampled_from(GRAPHS))
    scores = draw(score_rows(n))
    # a window as an app fills it: left-padded with 0, items from the catalogue (repeats allowed)
    filled = draw(st.integers(0, window))
    items = draw(st.lists(st.integers(1, n), min_size=filled, max_size=filled))
    return (n, window, k), scores, [0] * (window - filled) + items


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_exported_top_k_matches_the_brute_force_reference(runners, fmt):
    @SETTINGS
    @given(graph_cases())
    def prop(case):
        shape, scores, history = case
        items, best = runners[(fmt, shape, False)](scores, history)
        assert items.shape == (1, shape[2])
        check(items[0], best[0], scores, shape[2], {i for i in history if i})

    prop()


@st.composite
def ruled_cases(draw):
    shape, scores, history = draw(graph_cases())
    n = shape[0]
    allowed = np.asarray(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), np.uint8)
    boost = np.asarray(draw(st.lists(st.sampled_from([0.0, 0.5, -2.0, 3.25]), min_size=n, max_size=n)), np.float32)
    return shape, scores, history, allowed, boost


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_a_rule_filtered_top_k_is_the_ranking_with_the_excluded_items_removed(runners, fmt):
    """The rules entry's top-K: exactly the K best of scores + boost among the allowed unseen items
    (fewer only when fewer are allowed), as the brute-force reference over the same scores."""

    @SETTINGS
    @given(ruled_cases())
    def prop(case):
        shape, scores, history, allowed, boost = case
        items, best = runners[(fmt, shape, True)](scores, history, (allowed, boost))
        excluded = {j + 1 for j in range(shape[0]) if not allowed[j]}
        check(items[0], best[0], scores + boost, shape[2], {i for i in history if i} | excluded)

    prop()
