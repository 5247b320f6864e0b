"""Trials in threads (search.n_jobs > 1) are reproducible: each trial's initial weights come from its
own seed under a lock on a forked RNG, and its batches from its own generator, so two trials trained
side by side end with exactly the weights and metrics they reach alone."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from ee_search import fit
from ee_search.fit import train_network
from tests.conftest import tiny_config

CPU = torch.device("cpu")


def test_two_trials_in_threads_end_exactly_as_they_do_alone(monkeypatch):
    config = tiny_config(**{"train.max_epochs": 1})
    seeds = [11, 12]
    alone = [train_network(config, device=CPU, seed=s) for s in seeds]
    start = threading.Barrier(2)  # both trials build their models and train at the same moment
    real_build = fit.build_model

    def slow_build(*args, **kwargs):  # widens the window in which another thread could reseed
        time.sleep(0.2)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(fit, "build_model", slow_build)

    def together(seed):
        start.wait()
        return train_network(config, device=CPU, seed=seed)

    with ThreadPoolExecutor(2) as pool:
        side_by_side = list(pool.map(together, seeds))
    for a, b in zip(alone, side_by_side):
        sa, sb = a.model.state_dict(), b.model.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert a.metrics == b.metrics
    first, second = (r.model.state_dict() for r in alone)
    assert not all(torch.equal(first[k], second[k]) for k in first)  # the seeds do differ
