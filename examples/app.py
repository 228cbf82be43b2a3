"""A minimal app that embeds an edgerec bundle: NumPy + the runtime, no edgerec.

    python examples/app.py dist/arm64 --history 50,258,100 [--explain] [--k 10]
    python examples/app.py dist/rpi4  --history 50,258,100      # TFLite: tflite-runtime 2.14 on a Pi
    python examples/app.py dist/arm64 --history 50,258,100 --incremental   # the step model
    python examples/app.py dist/arm64 --history 50,258,100 --format executorch   # model.pte
    python examples/app.py dist/arm64 --history 50,258,100 --public-key key.pub  # signed bundle

Reads `metadata.json` (input name, dtype, max length, padding, each file's sha256, checked
first) and `items.json` (model index <-> your item ids and titles), encodes the history exactly
as the bundle describes (most recent item last, left-padded with 0), runs the model and prints
the 10 best items the user has not seen.
`--explain` reruns the model with each history item left out and names the items whose absence
lowers a recommendation's score most: an explanation computed by the device model itself.
`--public-key` checks the bundle's signature first (`edgerec sign`; OpenSSF model signing,
verified with the `model-signing` package): refused when anyone else signed it, when a file
differs from the signed digests, or when a file was added (examples/update.py installs updates).
`--incremental` feeds the history one item at a time through the bundle's step model (as an app
does when the user taps), carrying the state tensor between calls and rolling the window the way
metadata.json's `step_model.roll` says.
"""

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np


def check_integrity(bundle: Path, meta) -> None:
    """Refuse any bundle file that is not the one edgerec wrote and validated: metadata.json
    records each other file's size and sha256, and manifest.json (where the bundle ships it)
    vouches for metadata.json. Cheap (a hash of a few hundred KB) and worth doing at every start:
    a damaged download or a partial copy otherwise runs and gives wrong answers."""
    expected = dict(meta.get("integrity", {}))
    if (bundle / "manifest.json").is_file():
        expected["metadata.json"] = {
            "sha256": json.loads((bundle / "manifest.json").read_text())["files"]["metadata.json"]
        }
    for name, want in expected.items():
        blob = (bundle / name).read_bytes() if (bundle / name).is_file() else b""
        if len(blob) != want.get("bytes", len(blob)) or hashlib.sha256(blob).hexdigest() != want["sha256"]:
            raise SystemExit(f"error: {bundle / name} is not the file the bundle was built with")


UNSIGNED = ("bundle.sig", "report.json", "report.html")  # validate rewrites its reports; apps never load them


def verify_signature(bundle: Path, public_key: Path) -> dict:
    """Refuse a bundle not signed with `public_key`, or whose files (any of them, added ones
    included) differ from the signed digests; returns its release.json ({"version", ...}).
    Unlike check_integrity this stops an attacker: the digests are signed with a key the
    attacker does not hold."""
    try:
        from model_signing import hashing, verifying
    except ImportError:
        raise SystemExit("error: --public-key needs the model-signing package (pip install model-signing)") from None
    if not (bundle / "bundle.sig").is_file():
        raise SystemExit(f"error: {bundle} is not signed (no bundle.sig)")
    bundle = bundle.resolve()  # e.g. the `current` symlink of examples/update.py: model-signing walks no links
    config = verifying.Config().use_elliptic_key_verifier(public_key=public_key)
    # full paths: model-signing 1.0 matches ignored paths against the paths it walks
    config.set_hashing_config(
        hashing.Config().set_ignored_paths(paths=[bundle / n for n in UNSIGNED], ignore_git_paths=False)
    )
    if hasattr(config, "set_ignore_unsigned_files"):  # model-signing >= 1.1; 1.0 refuses added files anyway
        config.set_ignore_unsigned_files(False)
    try:
        config.verify(bundle, bundle / "bundle.sig")
    except Exception as exc:  # ValueError, cryptography's InvalidSignature
        reason = "not signed by this key" if type(exc).__name__ == "InvalidSignature" else " ".join(str(exc).split())
        raise SystemExit(f"error: {bundle}: signature check failed: {reason[:300]}") from None
    return json.loads((bundle / "release.json").read_text())


def _onnx(bundle: Path, meta, name):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # e.g. the weight-only int8 form: fold its int8 weights into float ones once, at load
    for key, value in meta.get("onnx_session_config", {}).get(name, {}).items():
        options.add_session_config_entry(key, value)
    session = ort.InferenceSession(str(bundle / name), options, providers=["CPUExecutionProvider"])
    dtype = np.int32 if meta["inputs"]["input_ids"]["dtype"]["onnx"] == "int32" else np.int64
    return lambda batch: session.run(["scores"], {"input_ids": batch.astype(dtype)})[0]  # any batch: one call


def _tflite(bundle: Path, meta, name):
    try:
        from tflite_runtime.interpreter import Interpreter  # Raspberry Pi, older devices
    except ImportError:
        from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=str(bundle / name))
    signature = next(iter(interpreter.get_signature_list()))
    runner = interpreter.get_signature_runner(signature)
    output = interpreter.get_signature_list()[signature]["outputs"][0]
    # the TFLite graph takes one history at a time
    return lambda batch: np.concatenate([runner(input_ids=row[None].astype(np.int32))[output] for row in batch])


def _executorch(bundle: Path, meta, name):
    import torch  # ExecuTorch's Python runtime takes torch tensors (the app's C++/Kotlin/Swift API does not)
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(bundle / name).load_method("forward")
    # batch 1, int64 ids; output 0 is the scores
    return lambda batch: np.concatenate(
        [method.execute([torch.from_numpy(row[None].astype(np.int64))])[0].numpy() for row in batch]
    )


LOADERS = {"onnx": _onnx, "tflite": _tflite, "executorch": _executorch}  # in the order preferred


def load(bundle: Path, fmt: str | None = None, public_key: Path | None = None):
    if public_key is not None:
        verify_signature(bundle, public_key)
    meta = json.loads((bundle / "metadata.json").read_text())
    check_integrity(bundle, meta)
    items = json.loads((bundle / "items.json").read_text())
    files = meta["files"]
    fmt = fmt or next(f for f in LOADERS if f in files)
    if fmt not in files:
        raise SystemExit(f"error: the bundle has no {fmt} file (it has {', '.join(files)})")
    return meta, items, LOADERS[fmt](bundle, meta, files[fmt])


def load_step(bundle: Path, meta):
    """The step model as `step(item, position, state) -> (outputs, next state)`, and its initial state."""
    step = meta.get("step_model")
    if not step:
        raise SystemExit("error: this bundle has no step model (edgerec export --step)")
    fmt = "onnx" if "onnx" in step["files"] else "tflite"

    def dtype(spec):
        name = spec["dtype"][fmt] if isinstance(spec["dtype"], dict) else spec["dtype"]
        return np.dtype(name)

    inputs = step["inputs"]
    initial = {
        name: np.zeros([1] + spec["shape"][1:], dtype(spec))
        for name, spec in inputs.items()
        if name not in ("item", "position")
    }  # every state input starts at zeros
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(bundle / step["files"]["onnx"]), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]

        def call(feeds):
            return dict(zip(names, session.run(names, feeds)))
    else:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            from ai_edge_litert.interpreter import Interpreter
        interpreter = Interpreter(model_path=str(bundle / step["files"]["tflite"]))
        runner = interpreter.get_signature_runner(next(iter(interpreter.get_signature_list())))

        def call(feeds):
            out = runner(**feeds)
            return {name: out[f"output_{i}"] for i, name in enumerate(step["tflite_outputs"])}

    def run(item, position, state):
        feeds = {
            "item": np.array([item], dtype(inputs["item"])),
            "position": np.array([position], dtype(inputs["position"])),
            **state,
        }
        out = call(feeds)
        return out, {name: out["next_" + name] for name in state}

    return step, initial, run


def incremental(bundle: Path, meta, history):
    """Feed the history one item at a time; returns the last call's outputs."""
    step, initial, run = load_step(bundle, meta)
    window, keep = step["layout"]["window"], step["roll"]["keep"]
    state, in_window, out = dict(initial), [], None
    for item in history:
        if len(in_window) == window:  # full: start over from the newest `keep` items
            state, replay, in_window = dict(initial), in_window[-keep:], []
            for old in replay:
                out, state = run(old, len(in_window), state)
                in_window.append(old)
        out, state = run(item, len(in_window), state)
        in_window.append(item)
    return out


def rules_top_k(bundle: Path, meta, history, allowed):
    """The bundle's rules file (edgerec export --top-k K --rules): the K best unseen items among
    `allowed` (model indices), ranked in the graph. Returns [(index, score)], best first."""
    entry = meta["entries"]["rules"]
    ids = encode([history], meta["max_len"])
    mask = np.zeros((1, meta["num_items"]), np.uint8)
    mask[0, np.asarray(allowed, np.int64) - 1] = 1
    boost = np.zeros((1, meta["num_items"]), np.float32)  # e.g. a promotion: + for some items
    if "onnx" in entry["files"]:
        import onnxruntime as ort

        session = ort.InferenceSession(str(bundle / entry["files"]["onnx"]), providers=["CPUExecutionProvider"])
        dtype = np.dtype(entry["inputs"]["input_ids"]["dtype"]["onnx"])
        feeds = {"input_ids": ids.astype(dtype), "allowed": mask, "boost": boost}
        items, scores = session.run(["items", "scores"], feeds)
    else:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            from ai_edge_litert.interpreter import Interpreter
        interpreter = Interpreter(model_path=str(bundle / entry["files"]["tflite"]))
        runner = interpreter.get_signature_runner(next(iter(interpreter.get_signature_list())))
        out = runner(input_ids=ids.astype(np.int32), allowed=mask, boost=boost)
        items, scores = out["output_0"], out["output_1"]
    return [(int(i), float(v)) for i, v in zip(items[0], scores[0]) if i > 0]  # 0: none left


def encode(histories, max_len):
    batch = np.zeros((len(histories), max_len), dtype=np.int64)  # 0 = padding, on the left
    for row, history in enumerate(histories):
        tail = history[-max_len:]
        batch[row, max_len - len(tail) :] = tail
    return batch


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--history", required=True, help="your item ids, oldest first, comma-separated")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--format", choices=sorted(LOADERS), help="the bundle file to run (default: the first it has)")
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--public-key", type=Path, help="refuse the bundle unless it is signed with this key")
    parser.add_argument(
        "--incremental", action="store_true", help="feed the history item by item through the bundle's step model"
    )
    parser.add_argument(
        "--allow", help="recommend only these item ids (comma-separated): the bundle's rules file when it has one"
    )
    args = parser.parse_args()

    meta, items, run = load(args.bundle, args.format, args.public_key)
    index_of = {str(entry["id"]): i + 1 for i, entry in enumerate(items)}  # model index = position + 1
    ids = [part.strip() for part in args.history.split(",") if part.strip()]
    unknown = [i for i in ids if i not in index_of]
    if not ids or unknown:
        raise SystemExit(f"error: unknown item ids {unknown}" if unknown else "error: empty history")
    history = [index_of[i] for i in ids]
    allowed = [index_of[i] for i in args.allow.split(",") if i.strip() in index_of] if args.allow else None
    if allowed is not None and "rules" in meta.get("entries", {}):
        for rank, (index, score) in enumerate(rules_top_k(args.bundle, meta, history, allowed)[: args.k], start=1):
            entry = items[index - 1]
            print(f"{rank:2d}. {entry.get('title') or entry['id']}  [{entry['id']}]  {score:.3f}")
        return
    if args.incremental:
        if args.explain:
            raise SystemExit("error: --explain uses the full model; drop --incremental")
        out = incremental(args.bundle, meta, history)
        if "items" in out:  # a top-K step file: the K best unseen items, already ranked
            ranked_items = [
                (i, s) for i, s in zip(out["items"][0][: args.k], out["scores"][0]) if i > 0
            ]  # 0: none left
            for rank, (index, score) in enumerate(ranked_items, start=1):
                entry = items[int(index) - 1]
                print(f"{rank:2d}. {entry.get('title') or entry['id']}  [{entry['id']}]  {score:.3f}")
            return
        scores = out["scores"]
    window = history[-meta["max_len"] :]
    variants = [history] + ([window[:j] + window[j + 1 :] for j in range(len(window))] if args.explain else [])
    if not args.incremental:
        scores = run(encode(variants, meta["max_len"]))  # column j scores model index j + 1
    ranked = scores[0].copy()
    ranked[np.asarray(history) - 1] = -np.inf  # never recommend what the user already has
    if allowed is not None:  # no rules file: the same rule on the full scores
        ranked[np.setdiff1d(np.arange(len(ranked)), np.asarray(allowed, np.int64) - 1)] = -np.inf
    best = [c for c in np.argsort(-ranked, kind="stable")[: args.k] if ranked[c] > -np.inf]  # fewer when few are left
    for rank, column in enumerate(best, start=1):
        entry = items[column]
        line = f"{rank:2d}. {entry.get('title') or entry['id']}  [{entry['id']}]  {ranked[column]:.3f}"
        if args.explain:
            drops = scores[0, column] - scores[1:, column]
            top = np.argsort(-drops, kind="stable")[:3]
            line += "  because of: " + "; ".join(
                f"{items[window[j] - 1].get('title') or items[window[j] - 1]['id']} ({drops[j]:+.2f})" for j in top
            )
        print(line)


if __name__ == "__main__":
    main()
