"""Standalone model runner: what runs on a device or in a runtime's own environment.

It imports only NumPy and the runtime (tflite_runtime, ai_edge_litert, onnxruntime, or
executorch with the torch it needs for its tensors), never edgerec, so it can be copied next to
a bundle and run with whatever Python the device has:

    python device_runner.py MODEL INPUTS.npy OUTPUT.npz [--threads N] [--warmup W] [--step]

INPUTS.npy holds encoded `input_ids` [N, max_len]; OUTPUT.npz gets `scores` [N, num_items] (for
a top-K file its `items` [N, K] instead; one batch-1 call per row, as an app makes them),
`seconds` per call (after W untimed warm-up calls), `load_seconds` (model load, the app's cold
start) and `peak_rss_bytes` of this process, which does nothing but load and run the model.

An ONNX model's session gets the entries that `onnx_session_config` in the bundle's metadata.json
beside it names for that file, if any (e.g. the weight-only int8 form's `session.disable_quant_qdq`),
as an app sets them.

When INPUTS is an .npz of named arrays (each [N, ...]), MODEL is an entry point with several
inputs (a rules or rerank file: edgerec.core.graphs): row i of every array is one batch-1 call,
and OUTPUT.npz gets every output in the file's order as `output_0`, `output_1`, ... (`scores` =
`output_0`) beside the timings.

With --step, MODEL is an incremental step model (edgerec.devices.incremental): each row's items are fed
one call at a time from an empty state, as an app feeds taps; `scores` holds the output after the
last item (the top-K `items` for a top-K file) and `seconds` every update's time.
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


def _onnx_options(path, threads):
    import json
    import os

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    meta = os.path.join(os.path.dirname(os.path.abspath(path)), "metadata.json")
    if os.path.isfile(meta):
        with open(meta) as f:
            entries = json.load(f).get("onnx_session_config", {}).get(os.path.basename(path), {})
            for key, value in entries.items():
                options.add_session_config_entry(key, value)
    return options


def _onnx(path, threads):
    import onnxruntime as ort

    options = _onnx_options(path, threads)
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    dtype = {"tensor(int32)": np.int32}.get(session.get_inputs()[0].type, np.int64)
    # a top-K file: its ranking is `items` (TFLite's first output is the same, output_0)
    output = "items" if "items" in [o.name for o in session.get_outputs()] else "scores"
    return lambda ids: session.run([output], {"input_ids": ids.astype(dtype)})[0]


def _executorch_method(path, threads):
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    portable_lib._unsafe_reset_threadpool(threads)  # XNNPACK's threads
    return Runtime.get().load_program(path).load_method("forward")


def _executorch(path, threads):
    import torch

    method = _executorch_method(path, threads)
    # a top-K file's first output is `items`, as ONNX's and TFLite's
    return lambda ids: method.execute([torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64))])[0].numpy()


# how each kind of model file is opened, by its suffix
# (.ort: ONNX Runtime's own format, what ORT Mobile apps load; the same session opens it)
OPENERS = {".onnx": _onnx, ".ort": _onnx, ".tflite": _tflite, ".pte": _executorch}


def opener(path):
    for suffix, open_file in OPENERS.items():
        if path.endswith(suffix):
            return open_file
    raise SystemExit(f"{path}: not a model file this runner knows ({', '.join(OPENERS)})")


# output order of a step model; TFLite names them output_0, output_1, ... in this order
STEP_OUTPUTS = {False: ["scores", "next_state"], True: ["items", "scores", "next_state", "next_history"]}
_ONNX_DTYPES = {
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(float)": np.float32,
    "tensor(uint8)": np.uint8,
}


def open_named(path, threads):
    """A model file with named inputs as `call(feeds) -> [outputs, in the file's order]`, plus its
    inputs' (shape, dtype)."""
    if path.endswith((".onnx", ".ort")):
        import onnxruntime as ort

        options = _onnx_options(path, threads)
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        specs = {
            i.name: ([d if isinstance(d, int) else 1 for d in i.shape], _ONNX_DTYPES[i.type])
            for i in session.get_inputs()
        }
        names = [o.name for o in session.get_outputs()]

        def call(feeds):
            return session.run(names, {k: np.asarray(v).astype(specs[k][1]) for k, v in feeds.items()})

        return call, specs
    if path.endswith(".pte"):  # inputs in the order they are given (the graph's forward order)
        import torch

        method = _executorch_method(path, threads)

        def call(feeds):
            tensors = [torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()]
            return [t.numpy() for t in method.execute(tensors)]

        return call, {}
    try:
        from tflite_runtime.interpreter import Interpreter
    except ImportError:
        from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=path, num_threads=threads)
    runner = interpreter.get_signature_runner(next(iter(interpreter.get_signature_list())))
    specs = {k: (list(v["shape"]), v["dtype"]) for k, v in runner.get_input_details().items()}
    count = len(runner.get_output_details())

    def call(feeds):
        out = runner(**{k: np.asarray(v).astype(specs[k][1]) for k, v in feeds.items()})
        return [out["output_%d" % i] for i in range(count)]

    return call, specs


def open_step(path, threads):
    """A step model as `call(feeds) -> {output name: array}` plus its inputs' (shape, dtype)."""
    call, specs = open_named(path, threads)
    order = STEP_OUTPUTS["history" in specs]
    return (lambda feeds: dict(zip(order, call(feeds)))), specs


def initial_state(specs):
    """Zeros for every state input (`state`, and `history` in top-K files), batch 1."""
    return {
        k: np.zeros([1] + list(shape[1:]), dtype)
        for k, (shape, dtype) in specs.items()
        if k not in ("item", "position")
    }


def step_once(call, specs, item, position, state):
    """One update: (outputs, the state to feed next time)."""
    out = call(dict(item=np.array([item]), position=np.array([position]), **state))
    return out, {name: out["next_" + name] for name in state}


def _replay_rows(path, ids, threads, warmup):
    call, specs = open_step(path, threads)
    for row in ids[:warmup]:
        state = initial_state(specs)
        for position, item in enumerate(row[row != 0]):
            _, state = step_once(call, specs, int(item), position, state)
    finals, seconds = [], []
    for row in ids:
        state, out = initial_state(specs), None
        for position, item in enumerate(row[row != 0]):
            started = time.perf_counter()
            out, state = step_once(call, specs, int(item), position, state)
            seconds.append(time.perf_counter() - started)
        finals.append(out["items"] if "items" in out else out["scores"])
    return finals, seconds


def _timed_calls(call, rows, count, warmup):
    """`call(rows(i))` for every row i < count after `warmup` untimed ones: (outputs, seconds)."""
    for row in range(min(warmup, count)):
        call(rows(row))
    outputs, seconds = [], []
    for row in range(count):
        started = time.perf_counter()
        outputs.append(call(rows(row)))
        seconds.append(time.perf_counter() - started)
    return outputs, seconds


def _run_feeds(args):
    """--inputs *.npz: one batch-1 call per row of the named arrays (see the module docstring)."""
    with np.load(args.inputs, allow_pickle=False) as f:
        feeds = {k: f[k] for k in f.files}
    started = time.perf_counter()
    call, _ = open_named(args.model, args.threads)
    load_seconds = time.perf_counter() - started
    count = len(next(iter(feeds.values())))
    outputs, seconds = _timed_calls(call, lambda r: {k: v[r : r + 1] for k, v in feeds.items()}, count, args.warmup)
    named = {f"output_{i}": np.concatenate([out[i] for out in outputs]) for i in range(len(outputs[0]))}
    np.savez(
        args.output,
        scores=named["output_0"],
        seconds=np.array(seconds),
        load_seconds=np.array(load_seconds),
        peak_rss_bytes=np.array(_peak_rss()),
        **named,
    )


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
    parser.add_argument("--step", action="store_true", help="MODEL is a step model: replay each row")
    args = parser.parse_args()
    if args.inputs.endswith(".npz"):
        _run_feeds(args)
        return
    ids = np.load(args.inputs, allow_pickle=False)
    if args.step:
        finals, seconds = _replay_rows(args.model, ids, args.threads, args.warmup)
        np.savez(
            args.output,
            scores=np.concatenate(finals),
            seconds=np.array(seconds),
            load_seconds=np.array(0.0),
            peak_rss_bytes=np.array(_peak_rss()),
        )
        return
    started = time.perf_counter()
    run = opener(args.model)(args.model, args.threads)
    load_seconds = time.perf_counter() - started
    scores, seconds = _timed_calls(run, lambda r: ids[r : r + 1], len(ids), args.warmup)
    rss = _peak_rss()
    np.savez(
        args.output,
        scores=np.concatenate(scores),
        seconds=np.array(seconds),
        load_seconds=np.array(load_seconds),
        peak_rss_bytes=np.array(rss),
    )


if __name__ == "__main__":
    main()
