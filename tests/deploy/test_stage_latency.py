"""The expected-latency model of `pareto --latency` (docs/design.md §4): its arithmetic against a hand
computation, its "share that reaches stage k" against the exported runner's own stage calls, and the
timing of an exported program's units (that it runs and fills every cell; not how fast: the machine
is shared)."""

from __future__ import annotations

import pytest
import torch

from ee_search.deploy.program import Normalise, example_batch, exit_stages, export_stages, load_program, save_program
from ee_search.deploy.stage_latency import StageCosts, measure, reach
from ee_search.exits import evaluate, score_logits
from ee_search.models import build_model
from tests.conftest import tiny_config


def test_expected_latency_is_the_hand_computed_sum():
    # Three stages, timed at batch 1 and 5: stage + exit step cost 1.0+0.1, 2.0+0.2, 4.0+0.4 ms at
    # batch 1 and 3.0+0.3, 6.0+0.6, 12.0+1.2 at batch 5; the runner's setup 0.05 and 0.09 ms.
    costs = StageCosts("cpu", [1, 5], [[1.0, 3.0], [2.0, 6.0], [4.0, 12.0]], [[0.1, 0.3], [0.2, 0.6], [0.4, 1.2]],
                       [0.05, 0.09], repeats=1, torch_threads=1)
    fractions = [0.5, 0.3, 0.2]  # half leave at exit 1, 0.3 at exit 2: stages reached by 1, 0.5, 0.2
    assert reach(fractions) == pytest.approx([1.0, 0.5, 0.2])
    # Batch 1: the setup, plus each stage and its exit step times the share that reaches it.
    assert costs.expected_ms(fractions, 1) == pytest.approx(0.05 + 1.0 * 1.1 + 0.5 * 2.2 + 0.2 * 4.4)
    # Batch 5: stage k runs unless none of the 5 reaches it (probability (1 - r)^5), on 5 r / P samples
    # on average when it runs; its cost is linear between the sizes measured, c(n) = c1 + (c5 - c1)(n - 1)/4.
    by_hand = 0.09
    for r, (c1, c5) in zip([1.0, 0.5, 0.2], [(1.1, 3.3), (2.2, 6.6), (4.4, 13.2)]):
        p = 1 - (1 - r) ** 5
        n = 5 * r / p
        by_hand += p * (c1 + (c5 - c1) * (n - 1) / 4)
    assert costs.expected_ms(fractions, 5) == pytest.approx(by_hand)
    # Everyone leaving at exit 1 costs stage 1 alone, at any batch size; nobody leaving costs them all.
    assert costs.expected_ms([1.0, 0.0, 0.0], 5) == pytest.approx(0.09 + 3.3)
    assert costs.expected_ms([0.0, 0.0, 1.0], 5) == pytest.approx(0.09 + 3.3 + 6.6 + 13.2)
    with pytest.raises(ValueError, match="3 stages but 2 exit fractions"):
        costs.expected_ms([0.5, 0.5], 1)


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    """An (untrained) 3-exit network exported as export-model exports it, with its first exit's
    threshold at the median score of 64 images, so that about half of them leave there."""
    torch.manual_seed(0)
    config = tiny_config(**{"model.name": "ee_vgg", "model.width": 8, "model.exit_loss_weights": None,
                            "exits.thresholds": [0.2, 0.2], "exits.criterion": "max_softmax"})
    network = build_model(config.model, 1, 10).to(memory_format=torch.channels_last).eval()
    images = torch.rand(64, 1, 28, 28)
    stages = exit_stages(network, Normalise([0.5], [0.25]))
    with torch.no_grad():
        logits = []
        x = images
        for stage in stages:
            out = stage(x)
            logits.append(out[0])
            x = out[-1]
    logits = torch.stack(logits)
    first = score_logits(logits[0], "max_softmax")
    thresholds = [float(first.median()), float(score_logits(logits[1], "max_softmax").median())]
    directory = tmp_path_factory.mktemp("program") / "program"
    save_program(export_stages(stages, example_batch(images)), thresholds, "max_softmax", directory)
    return load_program(directory), images, logits, thresholds


@pytest.mark.parametrize("batch", [1, 8])
def test_the_runner_runs_each_stage_on_the_share_the_model_says_reaches_it(program, batch):
    runner, images, logits, thresholds = program
    labels = torch.zeros(len(images), dtype=torch.long)
    fractions = evaluate(logits, labels, thresholds, "max_softmax").exit_fractions
    assert 0 < fractions[0] < 1 and fractions[1] > 0  # every stage has work, and not all of it
    seen = [0] * len(runner.stages)
    calls = [0] * len(runner.stages)

    def counting(k, stage):
        def call(x):
            seen[k] += len(x)
            calls[k] += 1
            return stage(x)
        return call

    original = runner.stages
    runner.stages = [counting(k, stage) for k, stage in enumerate(original)]
    try:
        for start in range(0, len(images), batch):
            runner(images[start:start + batch])
    finally:
        runner.stages = original
    assert [s / len(images) for s in seen] == pytest.approx(reach(fractions))
    if batch == 1:  # one sample per call: stage k is called for exactly the share that reaches it
        assert [c / len(images) for c in calls] == pytest.approx(reach(fractions))


def test_measure_times_every_unit_of_an_exported_program(program):
    runner, images, _, _ = program
    costs = measure(runner, images, [16], repeats=2, warmup=1, min_block_ms=0.5)
    assert costs.sizes == [1, 16] and costs.device == "cpu" and costs.torch_threads == torch.get_num_threads()
    for table in (costs.stage_ms, costs.exit_ms):
        assert len(table) == 3 and all(len(row) == 2 and all(ms > 0 for ms in row) for row in table)
    assert len(costs.start_ms) == 2 and all(ms > 0 for ms in costs.start_ms)
    assert costs.expected_ms([0.5, 0.25, 0.25], 16) > 0
    # Timing leaves the runner as it was: the exit steps timed wrote into their own outputs only.
    assert torch.equal(runner(images)[1], runner(images)[1])
