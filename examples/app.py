"""A minimal app that embeds an edgerec bundle: NumPy + the runtime, no edgerec.

    python examples/app.py dist/arm64 --history 50,258,100 [--explain] [--k 10]
    python examples/app.py dist/rpi4  --history 50,258,100      # TFLite: tflite-runtime 2.14 on a Pi

Reads `metadata.json` (input name, dtype, max length, padding) and `items.json` (model index <->
your item ids and titles), encodes the history exactly as the bundle describes (most recent item
last, left-padded with 0), runs the model and prints the 10 best items the user has not seen.
`--explain` reruns the model with each history item left out and names the items whose absence
lowers a recommendation's score most: an explanation computed by the device model itself.
"""

import argparse
import json
from pathlib import Path

import numpy as np


def load(bundle: Path):
    meta = json.loads((bundle / "metadata.json").read_text())
    items = json.loads((bundle / "items.json").read_text())
    files = meta["files"]
    if "onnx" in files:
        import onnxruntime as ort

        session = ort.InferenceSession(str(bundle / files["onnx"]), providers=["CPUExecutionProvider"])
        dtype = np.int32 if meta["inputs"]["input_ids"]["dtype"]["onnx"] == "int32" else np.int64

        def run(batch):  # dynamic batch: one call
            return session.run(["scores"], {"input_ids": batch.astype(dtype)})[0]
    else:
        try:
            from tflite_runtime.interpreter import Interpreter  # Raspberry Pi, older devices
        except ImportError:
            from ai_edge_litert.interpreter import Interpreter
        interpreter = Interpreter(model_path=str(bundle / files["tflite"]))
        signature = next(iter(interpreter.get_signature_list()))
        runner = interpreter.get_signature_runner(signature)
        output = interpreter.get_signature_list()[signature]["outputs"][0]

        def run(batch):  # the TFLite graph takes one history at a time
            return np.concatenate([runner(input_ids=row[None].astype(np.int32))[output] for row in batch])
    return meta, items, run


def encode(histories, max_len):
    batch = np.zeros((len(histories), max_len), dtype=np.int64)  # 0 = padding, on the left
    for row, history in enumerate(histories):
        tail = history[-max_len:]
        batch[row, max_len - len(tail):] = tail
    return batch


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--history", required=True, help="your item ids, oldest first, comma-separated")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--explain", action="store_true")
    args = parser.parse_args()

    meta, items, run = load(args.bundle)
    index_of = {str(entry["id"]): i + 1 for i, entry in enumerate(items)}  # model index = position + 1
    ids = [part.strip() for part in args.history.split(",") if part.strip()]
    unknown = [i for i in ids if i not in index_of]
    if not ids or unknown:
        raise SystemExit(f"error: unknown item ids {unknown}" if unknown else "error: empty history")
    history = [index_of[i] for i in ids]
    window = history[-meta["max_len"]:]
    variants = [history] + ([window[:j] + window[j + 1:] for j in range(len(window))] if args.explain else [])
    scores = run(encode(variants, meta["max_len"]))  # column j scores model index j + 1
    ranked = scores[0].copy()
    ranked[np.asarray(history) - 1] = -np.inf  # never recommend what the user already has
    best = np.argsort(-ranked, kind="stable")[: args.k]
    for rank, column in enumerate(best, start=1):
        entry = items[column]
        line = f"{rank:2d}. {entry.get('title') or entry['id']}  [{entry['id']}]  {ranked[column]:.3f}"
        if args.explain:
            drops = scores[0, column] - scores[1:, column]
            top = np.argsort(-drops, kind="stable")[:3]
            line += "  because of: " + "; ".join(
                f"{items[window[j] - 1].get('title') or items[window[j] - 1]['id']} ({drops[j]:+.2f})" for j in top)
        print(line)


if __name__ == "__main__":
    main()
