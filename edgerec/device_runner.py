"""Standalone model runner: what runs on a device or in a runtime's own environment.

It imports only NumPy and the runtime (tflite_runtime, ai_edge_litert or onnxruntime), never
edgerec, so it can be copied next to a bundle and run with whatever Python the device has:

    python device_runner.py MODEL INPUTS.npy OUTPUT.npz [--threads N] [--warmup W]

INPUTS.npy holds encoded `input_ids` [N, max_len]; OUTPUT.npz gets `scores` [N, num_items] (one
batch-1 call per row, as an app makes them), `seconds` per call (after W untimed warm-up calls),
`load_seconds` (model load, the app's cold start) and `peak_rss_bytes` of this process, which
does nothing but load and run the model.
"""

import argparse
import resource
import sys
import time

import numpy as np


def _tflite(path, threads):
    try:
        from tflite_runtime.interpreter import Interpreter
    except ImportError:
        from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=path, num_threads=threads)
    signatures = interpreter.get_signature_list()
    name = next(iter(signatures))
    runner = interpreter.get_signature_runner(name)
    output = next(iter(signatures[name]["outputs"]))
    dtype = runner.get_input_details()["input_ids"]["dtype"]
    return lambda ids: runner(input_ids=ids.astype(dtype))[output]


def _onnx(path, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    dtype = {"tensor(int32)": np.int32}.get(session.get_inputs()[0].type, np.int64)
    return lambda ids: session.run(["scores"], {"input_ids": ids.astype(dtype)})[0]


def _peak_rss():
    """Peak resident bytes of this process. Linux: VmHWM, which belongs to this program's address
    space (ru_maxrss would carry over the parent's peak across fork + exec)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    # ru_maxrss is KiB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("inputs")
    parser.add_argument("output")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=0)
    args = parser.parse_args()
    ids = np.load(args.inputs, allow_pickle=False)
    started = time.perf_counter()
    run = (_onnx if args.model.endswith(".onnx") else _tflite)(args.model, args.threads)
    load_seconds = time.perf_counter() - started
    for row in range(min(args.warmup, len(ids))):
        run(ids[row: row + 1])
    scores, seconds = [], []
    for row in range(len(ids)):
        started = time.perf_counter()
        scores.append(run(ids[row: row + 1]))
        seconds.append(time.perf_counter() - started)
    rss = _peak_rss()
    np.savez(args.output, scores=np.concatenate(scores), seconds=np.array(seconds),
             load_seconds=np.array(load_seconds), peak_rss_bytes=np.array(rss))


if __name__ == "__main__":
    main()
