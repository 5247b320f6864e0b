"""The exported model's ONNX graphs (docs/design.md §10), for runtimes that take ONNX (ONNX Runtime,
TensorRT, mobile and edge):

- `onnx/stage_k.onnx`: stage k and its head, the very `torch.export` programs of `program/` converted,
  with the same dynamic batch dimension and outputs (logits, features) / (logits,), for a runtime loop
  that compacts the batch between stages;
- `onnx/model.onnx`: input `x`, outputs `logits_1..logits_K`, the dense all-exits forward (the stage
  graphs chained into one), for runtimes that take a single graph and route outside it;
- `onnx/early_exit_onnx.py` (numpy + onnxruntime) runs either with the exit rule of `onnx/exit_rule.json`.

Needs the `onnx` extra (onnx, onnxscript for torch.onnx's exporter, onnxruntime to check the graphs):
without it export-model writes everything else and says how to get it.
"""

from __future__ import annotations

import importlib.util
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ee_search.deploy import early_exit_onnx
from ee_search.deploy.early_exit_onnx import DENSE_FILE
from ee_search.deploy.program import write_rule

ONNX_DIR = "onnx"
RUNNER_FILE = Path(early_exit_onnx.__file__).name
REQUIRED = ("onnx", "onnxscript", "onnxruntime")


def missing_packages() -> list[str]:
    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]


def adaptive_max_pool2d_by_windows(x: torch.Tensor, output_size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """aten.adaptive_max_pool2d as slices and maxima, for ONNX, which has no adaptive max pooling
    (BranchyNet's heads pool 7x7 and 14x14 maps to 4x4: windows of unequal size, so no MaxPool either).
    The spatial sizes are static in the graph (only the batch is dynamic), so the windows are known
    when tracing: output cell i covers rows floor(i·H/h) .. ceil((i+1)·H/h), as in torch's kernel.
    A maximum is exact and separable, so the values (rows first, then columns: h + w reductions, not
    h·w) are torch's bit for bit. The indices, the flat H·W position of each window's first maximum,
    cost a reduction per window; the layers never use them, and the unused nodes are pruned."""
    height, width = x.shape[-2:]
    out_h, out_w = output_size
    rows = [_window(i, height, out_h) for i in range(out_h)]
    cols = [_window(j, width, out_w) for j in range(out_w)]
    by_rows = torch.stack([x[..., top:bottom, :].amax(dim=-2) for top, bottom in rows], dim=-2)
    values = torch.stack([by_rows[..., left:right].amax(dim=-1) for left, right in cols], dim=-1)
    indices = []
    for top, bottom in rows:
        for left, right in cols:
            at = x[..., top:bottom, left:right].flatten(-2).argmax(dim=-1)
            indices.append((top + at // (right - left)) * width + left + at % (right - left))
    return values, torch.stack(indices, dim=-1).reshape(values.shape)


def _window(i: int, size: int, out: int) -> tuple[int, int]:
    return (i * size) // out, -((-(i + 1) * size) // out)


_DECOMPOSITIONS = {torch.ops.aten.adaptive_max_pool2d.default: adaptive_max_pool2d_by_windows}


def _to_onnx(program: torch.export.ExportedProgram, path: Path, output_names: list[str]) -> None:
    if any(node.target in _DECOMPOSITIONS for node in program.graph.nodes):
        program = program.run_decompositions(_DECOMPOSITIONS)  # only these ops; the converter does the rest
    with warnings.catch_warnings():
        # The exporter's own progress notes ("Obtain model graph ... ✅") are printed, not warned;
        # what it warns about is onnxscript's internals, nothing a user of export-model can act on.
        warnings.simplefilter("ignore", UserWarning)
        onnx_program = torch.onnx.export(program, (), input_names=["x"], output_names=output_names, dynamo=True,
                                         external_data=False, verbose=False)
    onnx_program.save(str(path))


def export_onnx(programs: Sequence[torch.export.ExportedProgram], thresholds: Sequence[float], criterion: str,
                directory: Path) -> None:
    """Write `directory` (onnx/): the stage graphs, the dense graph, the exit rule and the runner. The
    stage graphs are the stage programs of program/, converted; their batch dimension stays dynamic."""
    directory.mkdir(parents=True)
    names = [f"stage_{k}.onnx" for k in range(1, len(programs) + 1)]
    for k, (program, name) in enumerate(zip(programs, names), start=1):
        _to_onnx(program, directory / name, ["logits"] if k == len(programs) else ["logits", "features"])
    chain_stages([directory / name for name in names], directory / DENSE_FILE)
    write_rule(directory, thresholds, criterion, names)
    shutil.copyfile(early_exit_onnx.__file__, directory / RUNNER_FILE)


def chain_stages(paths: Sequence[Path], out: Path) -> None:
    """model.onnx: the stage graphs joined into one (stage k's `features` feed stage k+1's `x`), with
    input `x` and outputs `logits_1..logits_K`: the dense all-exits forward, node for node the stage
    graphs, so both ONNX routes compute the same logits (and converting once costs half the time)."""
    import onnx
    from onnx import compose

    merged = None
    for k, path in enumerate(paths, start=1):
        stage = compose.add_prefix(onnx.load(str(path)), f"stage{k}/")
        merged = stage if merged is None else compose.merge_models(
            merged, stage, io_map=[(f"stage{k - 1}/features", f"stage{k}/x")])
    names = {"stage1/x": "x"} | {f"stage{k}/logits": f"logits_{k}" for k in range(1, len(paths) + 1)}
    _rename(merged.graph, names)
    onnx.checker.check_model(merged)
    onnx.save(merged, str(out))


def _rename(graph, names: dict[str, str]) -> None:
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info):
        value.name = names.get(value.name, value.name)


def measure_onnx(directory: Path, images: torch.Tensor, labels: torch.Tensor,
                 reference: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> dict:
    """Both ONNX routes run by onnxruntime over the validation images, against the torch.export
    program's (prediction, exit, confidence): accuracy, depth, and how many samples took another exit
    (float rounding can move a sample that sits on a threshold)."""
    x = images.numpy()
    k_exits = len(list(directory.glob("stage_*.onnx")))
    out = {}
    for route, runner in (("stages", early_exit_onnx.load_stages(directory)),
                          ("model", early_exit_onnx.load_dense(directory))):
        prediction, exits, confidence = runner(x)
        out[route] = {
            "accuracy": float(np.mean(prediction == labels.numpy())),
            "avg_exit_depth": float(exits.astype(np.float64).mean() / k_exits),
            "exits_differing_from_program": int((exits != reference[1].numpy()).sum()),
            "predictions_differing_from_program": int((prediction != reference[0].numpy()).sum()),
            "max_confidence_difference": float(np.abs(confidence - reference[2].numpy()).max(initial=0.0)),
        }
    return out
