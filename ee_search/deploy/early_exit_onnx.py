"""Run an exported early-exit network's ONNX graphs (`DIR/onnx/`) with only numpy and onnxruntime.

This file is copied as it is into every exported model's `onnx/` folder, so it imports nothing but
numpy, onnxruntime and the standard library (the export's tests run it with ee_search not importable).

    import sys; sys.path.insert(0, "DIR/onnx")
    import early_exit_onnx
    stages = early_exit_onnx.load_stages("DIR/onnx")   # stage_k.onnx, the batch compacted between them
    dense = early_exit_onnx.load_dense("DIR/onnx")     # model.onnx: every exit on every sample
    prediction, exit_, confidence = stages(x)          # x: float32 [B, C, H, W] in [0, 1]

Both apply the exit rule of `exit_rule.json` (thresholds, criterion) in numpy, in float32, the formula
of ee_search.exits.policy.score_logits (a copy, because this file must run without ee_search). Their
logits differ from torch's by float rounding only, so a sample whose score lies within rounding of a
threshold could take the other exit; export-model counts such samples on the validation split and
writes them into card.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

RULE_FILE = "exit_rule.json"
DENSE_FILE = "model.onnx"


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def confidence_score(logits: np.ndarray, max_softmax: bool) -> np.ndarray:
    """Max softmax, or entropy in nats, per sample, in float32."""
    logits = logits.astype(np.float32, copy=False)
    if max_softmax:
        return softmax(logits).max(axis=-1)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return -(np.exp(log_p) * log_p).sum(axis=-1)


def may_leave(score: np.ndarray, threshold: np.float32, max_softmax: bool) -> np.ndarray:
    return score >= threshold if max_softmax else score <= threshold


class _Rule:
    def __init__(self, directory: Path) -> None:
        rule = json.loads((directory / RULE_FILE).read_text())
        self.max_softmax = rule["criterion"] == "max_softmax"
        always = -1.0 if self.max_softmax else np.inf  # the final exit takes everyone left
        self.thresholds = np.array([*rule["thresholds"], always], dtype=np.float32)
        self.stage_files = rule["stages"]


def _session(path: Path, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class EarlyExitStages:
    """`stage_k.onnx` in turn, with the samples that left after each side exit dropped from the batch.
    Returns (prediction int64 [B], exit int64 [B] in 1..K, confidence float32 [B])."""

    def __init__(self, directory: str | Path, threads: int | None = None) -> None:
        directory = Path(directory)
        self.rule = _Rule(directory)
        self.sessions = [_session(directory / name, threads) for name in self.rule.stage_files]

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        batch, k_exits = x.shape[0], len(self.sessions)
        prediction = np.zeros(batch, dtype=np.int64)
        taken = np.full(batch, k_exits, dtype=np.int64)
        top = np.zeros(batch, dtype=np.float32)
        alive = np.arange(batch)
        for k, session in enumerate(self.sessions):
            if len(alive) == 0:
                break  # everyone has left
            logits, *rest = session.run(None, {session.get_inputs()[0].name: x})
            score = confidence_score(logits, self.rule.max_softmax)
            leave = may_leave(score, self.rule.thresholds[k], self.rule.max_softmax)
            gone = alive[leave]
            prediction[gone] = logits[leave].argmax(axis=-1)
            top[gone] = softmax(logits[leave]).max(axis=-1)
            taken[gone] = k + 1
            alive = alive[~leave]
            x = np.ascontiguousarray(rest[0][~leave]) if rest else x
        return prediction, taken, top


class EarlyExitDense:
    """`model.onnx` (every exit's logits for every sample), then the exit rule across the exits."""

    def __init__(self, directory: str | Path, threads: int | None = None) -> None:
        directory = Path(directory)
        self.rule = _Rule(directory)
        self.session = _session(directory / DENSE_FILE, threads)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        logits = np.stack(self.session.run(None, {self.session.get_inputs()[0].name: x}))  # [K, B, C]
        return apply_exit_rule(logits, self.rule.thresholds, self.rule.max_softmax)


def apply_exit_rule(logits: np.ndarray, thresholds: np.ndarray,
                    max_softmax: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every exit's logits [K, B, C] -> (prediction, exit 1..K, confidence): each sample leaves at the
    first exit whose score passes its threshold (the last threshold always passes)."""
    scores = confidence_score(logits, max_softmax)  # [K, B]
    passes = may_leave(scores, thresholds[:, None], max_softmax)
    passes[-1] = True
    first = passes.argmax(axis=0)  # argmax returns the first True
    columns = np.arange(logits.shape[1])
    chosen = logits[first, columns]
    return chosen.argmax(axis=-1).astype(np.int64), first.astype(np.int64) + 1, softmax(chosen).max(axis=-1)


def load_stages(directory: str | Path, threads: int | None = None) -> EarlyExitStages:
    return EarlyExitStages(directory, threads)


def load_dense(directory: str | Path, threads: int | None = None) -> EarlyExitDense:
    return EarlyExitDense(directory, threads)
