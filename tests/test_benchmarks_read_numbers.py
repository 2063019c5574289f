"""`benchmarks/read_numbers.py`: how it scores what `lenet5 predict --json` answered."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from read_numbers import edit_distance, error_kinds, score_numbers  # noqa: E402


def _answer(text: str | None) -> dict:
    """An answer as `predict_file` gives it, for a picture read as `text` (None: refused)."""
    single = text is not None and len(text) == 1
    return {"label": int(text) if single else None, "text": text,
            "rejected": None if text is not None else "not a digit"}


@pytest.mark.parametrize(("a", "b", "distance"), [
    ("2024", "2024", 0), ("2024", "2034", 1), ("2024", "224", 1), ("2024", "20244", 1),
    ("", "123", 3), ("12", "21", 2),
])
def test_edit_distance_counts_digits_changed_dropped_or_added(a, b, distance):
    assert edit_distance(a, b) == distance
    assert edit_distance(b, a) == distance


def test_numbers_are_scored_on_their_text_and_a_refusal_is_wrong():
    truth = ["2024", "15", "386", "70"]
    answers = [_answer("2024"), _answer("16"), _answer(None), _answer("70")]
    exact, digit_accuracy, refused, by_length = score_numbers(answers, truth)
    assert exact == 0.5
    assert digit_accuracy == pytest.approx(1 - (1 + 3) / 11)
    assert refused == 0.25
    assert by_length == {2: 0.5, 3: 0.0, 4: 1.0}


def test_numbers_read_wrong_are_told_apart_by_what_went_wrong():
    truth = ["2024", "15", "386", "70", "41", "99"]
    answers = [_answer("2024"), _answer("16"), _answer(None), _answer("7"), _answer("411"),
               {"error": "contains no digit"}]
    assert error_kinds(answers, truth) == {"as many digits, misread": 1, "refused": 2,
                                           "fewer digits": 1, "more digits": 1}
