"""Data sets for rlscratch: real MNIST from the standard IDX files, verified by MD5.

    images, labels = load_mnist("train")          # uint8 (60000, 28, 28), (60000,)
    x = scale_images(images)                      # float32 (60000, 784) in [0, 1]

If the files are missing, ``python -m rlscratch.data fetch mnist`` puts them in the per-user cache.
"""

from rlscratch.data.fetch import csv_to_idx, fetch_mnist, read_mnist_csv
from rlscratch.data.idx import DataError, read_idx
from rlscratch.data.mnist import cache_dir, check_mnist, find_mnist, load_mnist, scale_images

__all__ = [
    "DataError",
    "cache_dir",
    "check_mnist",
    "csv_to_idx",
    "fetch_mnist",
    "find_mnist",
    "load_mnist",
    "read_idx",
    "read_mnist_csv",
    "scale_images",
]
