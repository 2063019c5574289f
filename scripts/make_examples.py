"""Write the example pictures the README's Quick start reads (examples/): a photographed number
"2024" and a photographed 7, made from MNIST *test* digits by the generators the tests and
benchmarks use (`tests/number_photos.py`, `tests/photo_digits.py`), on unevenly lit paper.

    python scripts/make_examples.py

The same seeds give the same files; `tests/test_examples.py` checks that the shipped model
reads them as their names say.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from number_photos import make_number  # noqa: E402
from photo_digits import make_photo, to_jpeg  # noqa: E402

from lenet5.data import load  # noqa: E402

EXAMPLES = ROOT / "examples"
NUMBER, SEED = "2024", 2024


def main() -> None:
    mnist = load("mnist", log=lambda _: None)
    images, labels = mnist.test_images, mnist.test_labels
    first = {digit: images[np.flatnonzero(labels == int(digit))[0]] for digit in set(NUMBER)}
    rng = np.random.default_rng(SEED)
    photo, _ = make_number([first[d] for d in NUMBER], rng, touching=0.0, broken=0.0)
    EXAMPLES.mkdir(exist_ok=True)
    (EXAMPLES / f"number-{NUMBER}.jpg").write_bytes(to_jpeg(photo, rng))
    seven = make_photo(images[np.flatnonzero(labels == 7)[0]], rng)
    (EXAMPLES / "digit-7.jpg").write_bytes(to_jpeg(seven, rng))


if __name__ == "__main__":
    main()
