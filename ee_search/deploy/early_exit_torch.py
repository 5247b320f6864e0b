"""Run an exported early-exit network (`DIR/program/`) with only torch installed.

This file is copied as it is into every exported model's `program/` folder, beside the programs it
runs, so it imports nothing but torch and the standard library (the export's tests run it with
ee_search not importable). Use:

    import sys; sys.path.insert(0, "DIR/program")
    import early_exit_torch
    model = early_exit_torch.load("DIR/program")
    prediction, exit_, confidence = model(x)   # x: float32 [B, C, H, W] in [0, 1]

`program/stage_k.pt2` is a `torch.export` program of stage k followed by its exit head (stage 1 with
the input normalisation in front), with a dynamic batch dimension; it returns (logits, features), the
last stage (logits,). `program/exit_rule.json` holds the operating point: thresholds and criterion.

The loop lives here, in Python, rather than inside one exported graph: after each side exit the batch
shrinks to the samples still undecided, a size that depends on the data, and `torch.export` cannot
trace layers like BatchNorm and pooling through such data-dependent sizes. Each stage program sees an
ordinary dynamic batch instead; this routine applies the exit rule and compacts the batch between them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

RULE_FILE = "exit_rule.json"


def confidence_score(logits: torch.Tensor, max_softmax: bool) -> torch.Tensor:
    """The exit criterion's score of each sample: max softmax, or entropy in nats. The same formula,
    in the same float32 arithmetic, as ee_search.exits.policy.score_logits, which chose the operating
    point: a copy, because this file must run without ee_search (a test checks that they agree)."""
    logits = logits.float()
    if max_softmax:
        return torch.softmax(logits, dim=-1).amax(dim=-1)
    log_p = torch.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


def may_leave(score: torch.Tensor, threshold: torch.Tensor, max_softmax: bool) -> torch.Tensor:
    """Confident enough (max softmax >= t) or certain enough (entropy <= t)."""
    return score >= threshold if max_softmax else score <= threshold


class EarlyExitProgram:
    """The stage programs and the exit rule: `model(x)` returns (prediction int64 [B], exit int64 [B]
    in 1..K, confidence float32 [B], the max softmax probability at the exit taken)."""

    def __init__(self, directory: str | Path) -> None:
        directory = Path(directory)
        rule = json.loads((directory / RULE_FILE).read_text())
        self.max_softmax = rule["criterion"] == "max_softmax"
        # The final exit takes everyone left: its "threshold" always passes.
        always = -1.0 if self.max_softmax else float("inf")
        self.thresholds = torch.tensor([*rule["thresholds"], always], dtype=torch.float32)
        self.stages = [torch.export.load(str(directory / name)).module() for name in rule["stages"]]

    @property
    def num_exits(self) -> int:
        return len(self.stages)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        outputs, alive = self.start(x)
        for k, stage in enumerate(self.stages):
            if len(alive) == 0:
                break  # everyone has left: the later stages have nothing to do
            x, alive = self.exit_step(k, stage(x), alive, outputs)
        return outputs

    def start(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        """The outputs to fill (prediction, exit, confidence) and the indices of the samples still in,
        on the input's device."""
        batch, device = x.shape[0], x.device
        outputs = (torch.zeros(batch, dtype=torch.long, device=device),
                   torch.full((batch,), self.num_exits, dtype=torch.long, device=device),
                   torch.zeros(batch, dtype=torch.float32, device=device))
        return outputs, torch.arange(batch, device=device)

    def exit_step(self, k: int, stage_out: tuple[torch.Tensor, ...], alive: torch.Tensor,
                  outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                  threshold: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
        """After stage k (0-based): the samples `alive` whose score passes exit k's threshold leave
        there (their prediction, exit and confidence written into `outputs`); returns the features and
        the indices of those that stay (the batch gathered for stage k + 1)."""
        logits, *rest = stage_out
        prediction, taken, top = outputs
        threshold = self.thresholds[k] if threshold is None else threshold
        score = confidence_score(logits, self.max_softmax)
        leave = may_leave(score, threshold.to(score.device), self.max_softmax)
        gone = alive[leave]
        prediction[gone] = logits[leave].argmax(dim=-1)
        top[gone] = torch.softmax(logits[leave].float(), dim=-1).amax(dim=-1)
        taken[gone] = k + 1
        stay = ~leave
        return (rest[0][stay] if rest else None), alive[stay]


def load(directory: str | Path) -> EarlyExitProgram:
    return EarlyExitProgram(directory)
