"""Random distortions of training digits, vectorised over the whole array.

LeCun et al. 1998 (section III) cut the test error of LeNet-5 from 0.95% to 0.8% by training
on randomly distorted copies of the digits: "planar affine transformations: horizontal and
vertical translations, scaling, squeezing (simultaneous horizontal compression and vertical
elongation, or the reverse), and horizontal shearing". The paper gives no ranges; the ones
below are ours, measured, and a small rotation is added. Simard, Steinkraus and Platt (2003)
added elastic distortions: a random displacement field per image, smoothed by a Gaussian of
sigma 4 and scaled by alpha 34.

Every output pixel reads its source position by bilinear interpolation, vectorised over
blocks of images (never a Python loop over images or pixels); blocks are small so that the
working arrays stay in the CPU cache.
"""

from __future__ import annotations

import numpy as np

from lenet5.threads import over_blocks

MAX_PIXEL_SHIFT = 2  # --augment shift: whole pixels, each axis
# --augment affine's ranges, chosen by measurement: benchmarks/results/lenet5_1998_settings.md.
MAX_SHIFT = 1.0  # pixels, each axis
MAX_SCALE = 0.05  # zoom by 1 +- this
MAX_SQUEEZE = 0.05  # x times (1 + s), y divided by (1 + s)
MAX_SHEAR = 0.075  # horizontal shear: x += shear * y
MAX_ROTATION = np.deg2rad(2.5)
ELASTIC_SIGMA = 4.0  # Simard et al. 2003, on 28x28 digits
ELASTIC_ALPHA = 34.0
BLOCK = 256  # images per vectorised step: ~1 MB arrays stay in the CPU cache


def random_affine(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n random maps from output to source coordinates about the image centre:
    (matrices (n, 2, 2) acting on (row, col), shifts (n, 2))."""
    zoom = 1.0 + rng.uniform(-MAX_SCALE, MAX_SCALE, n)  # (n,)
    squeeze = 1.0 + rng.uniform(-MAX_SQUEEZE, MAX_SQUEEZE, n)
    shear = rng.uniform(-MAX_SHEAR, MAX_SHEAR, n)
    angle = rng.uniform(-MAX_ROTATION, MAX_ROTATION, n)
    shifts = rng.uniform(-MAX_SHIFT, MAX_SHIFT, (n, 2))
    # forward map on (row, col) = (y, x): scale rows by zoom/squeeze and columns by
    # zoom*squeeze, shear columns by rows, then rotate
    scale = np.zeros((n, 2, 2))
    scale[:, 0, 0] = zoom / squeeze
    scale[:, 1, 1] = zoom * squeeze
    shear_m = np.broadcast_to(np.eye(2), (n, 2, 2)).copy()
    shear_m[:, 1, 0] = shear
    cos, sin = np.cos(angle), np.sin(angle)
    rotate = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)  # (n, 2, 2)
    forward = rotate @ shear_m @ scale
    return np.linalg.inv(forward), shifts  # output pixel -> where to read it from


def elastic_noise(n: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 2, h, w) float32 uniform noise in [-1, 1) per pixel, which `smoothed` turns into
    displacements."""
    noise = rng.random((n, 2, h, w), dtype=np.float32)
    noise *= 2.0
    noise -= 1.0
    return noise


def smoothed(noise: np.ndarray) -> np.ndarray:
    """Smooth random displacements in pixels (Simard et al. 2003) from `elastic_noise` (n, 2,
    h, w): Gaussian-smoothed (zero outside the image, the kernel cut at 4 sigma, as
    scipy.ndimage.gaussian_filter does), times alpha. The separable smoothing is two small
    matrix products, G_h @ noise @ G_w^T, which run several times faster than
    gaussian_filter on these tiny images."""
    n, _, h, w = noise.shape
    along_rows = (noise.reshape(-1, w) @ gaussian_matrix(w).T).reshape(n, 2, h, w)  # one GEMM
    return ELASTIC_ALPHA * (gaussian_matrix(h) @ along_rows)


def gaussian_matrix(size: int, sigma: float = ELASTIC_SIGMA) -> np.ndarray:
    """(size, size) float32 G with G @ v the 1-D Gaussian smoothing of v, zero outside."""
    radius = int(4.0 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    offset = np.arange(size)[None, :] - np.arange(size)[:, None]  # (size, size): j - i
    inside = np.abs(offset) <= radius
    return np.where(inside, taps[np.clip(offset + radius, 0, 2 * radius)], 0.0).astype(np.float32)


def shift(images: np.ndarray, rng: np.random.Generator, max_shift: int = MAX_PIXEL_SHIFT
          ) -> np.ndarray:
    """Each image moved by its own random whole-pixel offset in [-max_shift, max_shift] on
    each axis: the cheapest distortion, and the one a small network profits from most.
    (N, H, W) uint8 -> (N, H, W) uint8."""
    return shift_by(images, shift_offsets(len(images), rng, max_shift), max_shift)


def shift_offsets(n: int, rng: np.random.Generator, max_shift: int = MAX_PIXEL_SHIFT
                  ) -> np.ndarray:
    """(2, n) random (row, column) offsets in [0, 2 * max_shift] for ``shift_by``."""
    return rng.integers(0, 2 * max_shift + 1, (2, n))


def shift_by(images: np.ndarray, offsets: np.ndarray, max_shift: int = MAX_PIXEL_SHIFT
             ) -> np.ndarray:
    """Each image (N, H, W) moved by offsets (2, N) - max_shift, zeros coming in."""
    n, h, w = images.shape
    padded = np.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(1, 2))
    dy, dx = offsets  # (n,) each
    return windows[np.arange(n), dy, dx]  # (N, H, W): one gather, no loop


def distort(images: np.ndarray, rng: np.random.Generator, elastic: bool = False) -> np.ndarray:
    """A randomly distorted copy of each image: (N, H, W) uint8 -> (N, H, W) uint8.

    Each image gets its own random affine map (translation, scaling, squeezing, horizontal
    shearing, small rotation) and, with ``elastic``, a smooth random displacement field on
    top of it. Pixels read from outside the image are background (0).
    """
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"distort needs (N, H, W) uint8 images, got {images.dtype} "
                         f"{images.shape}")
    n, h, w = images.shape
    out = np.empty_like(images)
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    grid = np.stack([rows.ravel(), cols.ravel()]) - centre[:, None]  # (2, H*W) about centre

    def draw(part: slice) -> tuple:  # block by block, in order: always the same stream
        m = part.stop - part.start
        inverse, shifts = random_affine(m, rng)
        return inverse, shifts, (elastic_noise(m, h, w, rng) if elastic else None)

    def distort_block(part: slice, inverse: np.ndarray, shifts: np.ndarray,
                      noise: np.ndarray | None) -> None:
        src = (inverse @ grid + (centre + shifts)[:, :, None]).astype(np.float32)  # (m, 2, H*W)
        if noise is not None:
            src += smoothed(noise).reshape(-1, 2, h * w)
        out[part] = bilinear(images[part], src).reshape(-1, h, w)

    over_blocks(n, BLOCK, distort_block, draw)  # blocks: ~1 MB arrays stay in the CPU cache
    return out


def bilinear(images: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Sample each uint8 image (m, H, W) at its own (row, col) positions src (m, 2, P), with
    zeros outside the image: (m, P) uint8, rounded."""
    m, h, w = images.shape
    # pad by one zero row/column before and two after, and clamp: every position then has
    # its 2x2 neighbourhood inside the padded image, and far-outside ones read only zeros
    padded = np.zeros((m, h + 3, w + 3), np.uint8)  # (m, H+3, W+3)
    padded[:, 1:h + 1, 1:w + 1] = images
    pos = np.clip(src + 1, 0, [[h + 1], [w + 1]]).astype(np.float32)  # padded coordinates
    corner = pos.astype(np.int32)  # floor, as pos >= 0
    frac = pos - corner  # (m, 2, P)
    # each pixel's 2x2 neighbourhood packed into one uint32, so one gather reads all four
    quads = np.stack([padded[:, :-1, :-1], padded[:, :-1, 1:],
                      padded[:, 1:, :-1], padded[:, 1:, 1:]], -1)  # (m, H+2, W+2, 4)
    width = w + 2
    flat = corner[:, 0] * width + corner[:, 1]  # (m, P)
    flat += (np.arange(m, dtype=np.int32) * (h + 2) * width)[:, None]
    q = quads.view(np.uint32).reshape(-1)[flat].view(np.uint8).reshape(*flat.shape, 4)
    q = q.astype(np.float32)  # (m, P, 4): the four neighbours, row-major
    fr, fc = frac[:, 0], frac[:, 1]  # (m, P)
    top = q[..., 0] + fc * (q[..., 1] - q[..., 0])
    bottom = q[..., 2] + fc * (q[..., 3] - q[..., 2])
    top += fr * (bottom - top)  # a convex combination of uint8 values: within [0, 255]
    top += 0.5
    return top.astype(np.uint8)  # rounds
