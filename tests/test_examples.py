"""`examples/`: the pictures the README's Quick start reads (`scripts/make_examples.py`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lenet5.model import load
from lenet5.predict import predict_files

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(("name", "text"), [("number-2024.jpg", "2024"), ("digit-7.jpg", "7")])
def test_the_shipped_model_reads_each_example_as_its_name_says(name, text):
    [answer] = predict_files(load("pretrained"), [str(EXAMPLES / name)])
    assert answer["text"] == text and answer["rejected"] is None
