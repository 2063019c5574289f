"""The model shipped with lenet5, so that `lenet5 predict photo.jpg` works before any training.

It is the default recipe's model: of five seeds, the one whose MNIST test accuracy is nearest
their mean (not the luckiest); its metadata holds the recipe, the seed, the accuracy, the five
seeds' mean and spread, and the number-reading calibration. `scripts/build_pretrained.py`
rebuilds it. Wherever a MODEL is taken, the name ``pretrained`` means this file.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from ..files import MODEL_FILE

NAME = "pretrained"


def path() -> Path:
    """Where the shipped model file is."""
    return Path(str(files(__name__).joinpath(MODEL_FILE)))
