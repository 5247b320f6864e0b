"""What `ee-search export-model` prints once the model is written (docs/design.md §10)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console


def print_exported(console: Console, card: dict, out: Path) -> None:
    """What export-model wrote, what the program reproduced, its CPU latency, and how to load each format."""
    val, latency = card["validation"], card["latency_ms_cpu"]
    console.print(
        f"Exported trial {card['trial_number']} at thresholds {card['thresholds']} to {out}: validation accuracy "
        f"{val['accuracy']:.4f}, avg exit depth {val['avg_exit_depth']:.4f}, relative FLOPs {val['relative_flops']:.3f} "
        f"(reproduced by the program on {card['validation_measured_by_program']['samples']} validation images)."
    )
    for batch in ("batch_1", "batch_256"):
        b = latency[batch]
        console.print(f"  CPU latency {batch.replace('_', ' ')}: {b['early_exit_ms']:.2f} ms early-exit vs "
                      f"{b['full_depth_ms']:.2f} ms full depth (median of paired ratios {b['speedup']:.2f}x, "
                      f"range {b['speedup_min']:.2f}-{b['speedup_max']:.2f}x)")
    if "registered" in card:
        console.print(f"  registered as {card['registered']['name']} version {card['registered']['version']}")
    onnx = card["onnx"]
    if "skipped" in onnx:
        console.print(f"  no ONNX graphs: {onnx['skipped']}")
    else:
        routes = onnx["validation_measured_by_onnxruntime"]
        console.print("  onnxruntime: " + "; ".join(
            f"{route} accuracy {m['accuracy']:.4f}, avg exit depth {m['avg_exit_depth']:.4f}, "
            f"{m['exits_differing_from_program']} exits differ from the program" for route, m in routes.items()))
    console.print(f"Load it with mlflow.pyfunc.load_model('{out}'); with only torch, early_exit_torch.load('{out / 'program'}') "
                  f"(the file {out / 'program' / 'early_exit_torch.py'}); with onnxruntime, {out / 'onnx'} (README).")
