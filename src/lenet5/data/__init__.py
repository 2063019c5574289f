"""Verified datasets: strict IDX files, a checksummed cache, and the transforms training needs."""

from lenet5.data.datasets import DATASETS, Dataset, fetch, load
from lenet5.data.idx import read_idx, write_idx

__all__ = ["DATASETS", "Dataset", "fetch", "load", "read_idx", "write_idx"]
