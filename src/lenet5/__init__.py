"""LeNet-5 done right: verified data, two engines, the modern and the faithful 1998 network.

    import lenet5
    model = lenet5.load("pretrained")          # or a run directory, engine="torch"
    probs = model.predict_proba(images)        # (N, 28, 28) uint8 or float -> (N, 10)
    lenet5.preprocess_image("photo.jpg")       # -> (28, 28) uint8, as MNIST would have it
    ds = lenet5.datasets.load("mnist")         # verified train/test arrays
"""

from __future__ import annotations

from .version import __version__

__all__ = ["__version__", "datasets", "load", "preprocess_image"]


def __getattr__(name: str):
    """Import on first use, so `lenet5 --help` stays quick."""
    if name == "load":
        from .model import load

        return load
    if name == "preprocess_image":
        from .images import preprocess_image

        return preprocess_image
    if name == "datasets":
        from .data import datasets

        return datasets
    raise AttributeError(f"module 'lenet5' has no attribute {name!r}")
