"""Training-time transforms on whole arrays: padding, normalisation, a validation split.

LeNet-5 reads 32x32 inputs so that stroke ends sit well inside C1's receptive fields; MNIST
images are 28x28, hence `pad`. Everything is vectorised over the batch axis.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from lenet5.arch import Architecture
from lenet5.errors import DataError, Lenet5Error, ModelFileError


def pad(images: np.ndarray, pad: int = 2) -> np.ndarray:
    """Zero-pad the last two axes: (N,28,28) -> (N,28+2*pad,28+2*pad). (np.pad takes 20 times
    longer on the few images a reading passes.)"""
    *batch, height, width = images.shape
    padded = np.zeros((*batch, height + 2 * pad, width + 2 * pad), images.dtype)
    padded[..., pad:pad + height, pad:pad + width] = images
    return padded


STATS_CHUNK = 1 << 20  # pixels counted at a time by pixel_stats


def pixel_stats(images: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of uint8 pixels scaled to [0, 1] (MNIST train: 0.1307, 0.3081).

    Exact, from a 256-bin histogram, so no float copy of the images is ever made.
    """
    if images.dtype != np.uint8:
        raise TypeError(f"pixel_stats needs uint8 images, got {images.dtype}")
    flat = images.reshape(-1)
    counts = np.zeros(256, np.int64)
    for start in range(0, flat.size, STATS_CHUNK):  # bincount makes an int64 copy of its input:
        counts += np.bincount(flat[start:start + STATS_CHUNK], minlength=256)  # keep it small
    values = np.arange(256) / 255.0  # (256,)
    n = counts.sum()
    mean = float(counts @ values / n)
    std = float(np.sqrt(counts @ (values - mean) ** 2 / n))
    return mean, std


def normalize(
    images: np.ndarray, mean: float | np.ndarray, std: float, dtype: DTypeLike = np.float32,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """(N,H,W) uint8 (0-255) or float (0-1) -> (N,1,H,W) `dtype` holding (x - mean) / std,
    written into ``out`` (N,1,H,W) where given: refilling last epoch's inputs is cheaper than
    faulting in a fresh quarter-gigabyte array.

    The 1998 input scaling (background -0.1, ink 1.175) is mean=0.1/1.275, std=1/1.275.
    """
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    if out is None:
        x = images.astype(dtype)[:, None]  # (N,1,H,W)
    else:
        x = out
        np.copyto(x[:, 0], images)
    x *= 1.0 / (scale * std)
    x -= mean / std
    return x


NORMALIZATIONS = ("mean_std", "mean_image", "lecun_1998")


def input_normalization(arch: Architecture, train_images: np.ndarray,
                        kind: str | None = None) -> dict:
    """How 28x28 images become this network's inputs (``kind``, else the architecture's own);
    stored in model files.

    mean_std: minus the training pixels' mean, over their standard deviation. mean_image:
    minus the training set's mean image, pixel by pixel, on the 0-255 scale (the from-scratch
    NumPy tutorials' recipe). lecun_1998: background -0.1 and ink 1.175 (LeCun et al. 1998,
    section II-A), so inputs have mean roughly 0 and variance roughly 1.
    """
    kind = kind or arch.input_normalization
    pad_px = arch.pad
    if kind == "mean_std":
        mean, std = pixel_stats(train_images)
        return {"kind": kind, "pad": pad_px, "mean": mean, "std": std}
    if kind == "mean_image":
        mean_image = train_images.mean(axis=0, dtype=np.float64) / 255.0  # (28, 28)
        return {"kind": kind, "pad": pad_px, "mean": mean_image.tolist(), "std": 1.0 / 255.0}
    if kind == "lecun_1998":
        return {"kind": kind, "pad": pad_px, "background": -0.1, "ink": 1.175}
    raise Lenet5Error(f"unknown --normalization {kind!r}; choose one of: "
                      f"{', '.join(NORMALIZATIONS)}.")


def mean_std(norm: dict) -> tuple[float | np.ndarray, float]:
    """The (mean, std) on the 0-1 pixel scale that an input normalisation subtracts and
    divides by, for the padded image (``input_normalization``'s dict, as stored in model
    files); mean_image's mean is an image (H, W) with the padding at 0."""
    if norm["kind"] == "mean_std":
        return norm["mean"], norm["std"]
    if norm["kind"] == "mean_image":
        return pad(np.asarray(norm["mean"], dtype=np.float64), norm["pad"]), norm["std"]
    if norm["kind"] == "lecun_1998":
        span = norm["ink"] - norm["background"]
        return -norm["background"] / span, 1.0 / span
    raise ModelFileError(f"unknown input normalisation {norm['kind']!r} in the model file; "
                         "upgrade lenet5.")


def prepare_inputs(images: np.ndarray, norm: dict, out: np.ndarray | None = None) -> np.ndarray:
    """(N,28,28) uint8 0-255 or float 0-1, bright ink -> the (N,1,32,32) float32 network input
    (into ``out`` where given, see `normalize`)."""
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise Lenet5Error(f"images must be 28x28 (shape (N, 28, 28)), got {images.shape}; "
                          "use lenet5.preprocess_image for photos and other sizes.")
    if images.dtype != np.uint8:
        images = images.astype(np.float32)
        if images.size and (images.min() < 0 or images.max() > 1):
            raise Lenet5Error("float images must hold values in [0, 1]; divide 0-255 pixel "
                              "values by 255 or pass uint8.")
    padded = pad(images, norm["pad"])  # (N,32,32), background 0 before scaling
    return normalize(padded, *mean_std(norm), out=out)


def split_validation(
    images: np.ndarray, labels: np.ndarray, val_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hold out `val_size` random examples: (train_x, train_y, val_x, val_y), fixed by `seed`.

    Both parts keep the original order of the examples.
    """
    n = len(images)
    if len(labels) != n:
        raise ValueError(f"{n} images but {len(labels)} labels")
    if not 0 <= val_size < n:
        raise DataError(
            f"--val-size {val_size} must be at least 0 and less than the {n} training images; "
            "choose a smaller value."
        )
    if val_size == 0:  # nothing held out: the arrays as they are, no copy
        return images, labels, images[:0], labels[:0]
    order = np.random.default_rng(seed).permutation(n)  # (n,)
    val = np.sort(order[:val_size])
    train = np.sort(order[val_size:])
    return images[train], labels[train], images[val], labels[val]
