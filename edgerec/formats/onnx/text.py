"""A text teacher in ONNX Runtime: the "before" model, measured runtime to runtime.

A fine-tuned language BERT (`BertForSequenceClassification`, kind "text") is what a team starts
from, and the fair comparison for the student is that model in an optimized runtime, not only in
PyTorch. optimum's exporter writes it (task text-classification, fp32, its own output check);
edgerec adds the scorer that feeds it the same token ids the PyTorch model reads
(models.TextEncoder) and maps its logits onto the data's item indices. It is a reference for
`validate` and `export`, not a device bundle: it needs a tokenizer in the app, which is why
edgerec distils it into an id student.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from edgerec.core.artifacts import artifact_hash
from edgerec.core.console import third_party
from edgerec.core.datasets import cache_dir
from edgerec.core.errors import EdgerecError


def export_text_onnx(model_dir: Path, out: Path, opset: int = 17) -> Path:
    """Write `out`/model.onnx for the text teacher in `model_dir` (an edgerec model directory)."""
    from optimum.exporters.onnx import main_export

    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with third_party("optimum's ONNX export of the text teacher"):
            main_export(
                str(model_dir),
                tmp,
                task="text-classification",
                opset=opset,
                local_files_only=True,
                trust_remote_code=False,
                library_name="transformers",
            )
    except Exception as exc:  # the exporter's own failure, as one line
        shutil.rmtree(tmp, ignore_errors=True)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise EdgerecError(f"{model_dir}: the ONNX export of the text teacher failed ({first})") from None
    if not (tmp / "model.onnx").is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        raise EdgerecError(f"{model_dir}: optimum wrote no model.onnx")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out / "model.onnx"


def cached_text_onnx(teacher_dir: Path, model_dir: Path) -> Path:
    """The teacher's ONNX file, exported once per teacher artifact (keyed by its content hash)."""
    folder = cache_dir() / "text-onnx" / artifact_hash(teacher_dir)[:32]
    if (folder / "model.onnx").is_file():
        return folder / "model.onnx"
    folder.parent.mkdir(parents=True, exist_ok=True)
    return export_text_onnx(model_dir, folder)


class TextOnnxScorer:
    """Scores [B, num_items + 1] from the exported text teacher, inputs as the PyTorch one reads."""

    def __init__(self, rec, path: Path, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: ONNX Runtime's default, all cores
        options.log_severity_level = 3
        self.rec = rec
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}

    def scores(self, histories, batch_size: int = 32) -> np.ndarray:
        order = np.argsort([len(h) for h in histories], kind="stable")
        out = np.empty((len(histories), self.rec.num_items + 1), dtype=np.float32)
        for start in range(0, len(histories), batch_size):
            rows = order[start : start + batch_size]
            feeds = {k: v.numpy() for k, v in self.rec.encode([histories[i] for i in rows]).items() if k in self.inputs}
            out[rows] = self.rec.to_item_scores(self.session.run(["logits"], feeds)[0])
        return out
