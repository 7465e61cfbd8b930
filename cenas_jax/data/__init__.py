"""Datasets: embedded (``digits``, ``mnist5k``) and on-disk standard formats, split with a seed.

``load_dataset(DataConfig) -> Dataset`` is the one entry point; ``list_datasets(data_dir)`` says
which datasets are available. See ``catalog.py`` for the names and ``splits.py`` for the splits.
"""

from cenas_jax.data.catalog import known_names, list_datasets, load_dataset
from cenas_jax.data.dataset import Dataset, DatasetInfo

__all__ = ["Dataset", "DatasetInfo", "known_names", "list_datasets", "load_dataset"]
