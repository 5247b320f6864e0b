"""Datasets for trials: `prepare_data` loads and splits the study's dataset once per process
(prepare.py, with the dataset registry in `config/datasets.py`), and `build_batches` hands a trial
its seeded, augmented batch iterators on the training device."""

from ee_search.data.batches import DeviceBatches
from ee_search.data.prepare import DataBundle, PreparedData, build_batches, load_source, prepare_data

__all__ = ["DataBundle", "DeviceBatches", "PreparedData", "build_batches", "load_source", "prepare_data"]
