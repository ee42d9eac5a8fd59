"""Metric code on known strings and vectors (values computed by hand), and the choice rule on planted scores."""

import math

import numpy as np
import pytest

from fish_speech.errors import UserError
from fish_speech.evaluate.choice import CandidateScore, choose_checkpoint
from fish_speech.evaluate.metrics import (
    centroid,
    cer,
    cosine_similarity,
    duration_ratio,
    edit_distance,
    mean,
    normalize_text,
    wer,
    words,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Hello, World!", "hello world"),
        ("  Don't   STOP  ", "don't stop"),
        ("Don’t", "don't"),  # typographic apostrophe inside a word
        ("e-mail - now", "e-mail now"),  # hyphen inside a word stays, a dash between words goes
        ("ＡＢＣ１２３", "abc123"),  # full-width forms (NFKC)
        ("«Straße»", "strasse"),  # case folding of ß
        ("我爱北京。天安门！", "我爱北京 天安门"),
        ("$5 + 3 = 8", "5 3 8"),  # symbols are separators
        ("", ""),
    ],
)
def test_normalize_text(text, expected):
    assert normalize_text(text) == expected


def test_edit_distance_hand_computed():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("sitting", "kitten") == 3
    assert edit_distance("", "abc") == 3
    assert edit_distance("flaw", "lawn") == 2
    assert edit_distance(["a", "b"], ["a", "b"]) == 0


def test_cer_and_wer_hand_computed():
    assert cer("kitten", "sitting") == pytest.approx(3 / 6)
    # ref: the cat sat on the mat (6 words); hyp: one substitution (sat->sit), one deletion (the)
    assert wer("The cat sat on the mat.", "the cat sit on mat") == pytest.approx(2 / 6)
    # CER ignores spaces: a missed word boundary is no character error, but two word errors
    assert cer("ice cream", "icecream") == 0.0
    assert wer("ice cream", "icecream") == pytest.approx(1.0)
    # punctuation and case never count
    assert cer("Hello, world!", "hello world") == 0.0
    assert wer("Hello, world!", "HELLO WORLD") == 0.0
    # insertions can push a rate above 1
    assert cer("a", "abc") == pytest.approx(2.0)
    # empty sides
    assert cer("", "") == 0.0
    assert cer("", "x") == 1.0
    assert cer("abc", "") == 1.0
    assert wer("abc def", "") == 1.0


def test_languages_without_spaces():
    assert words("我爱 python") == ["我", "爱", "python"]
    assert words("東京タワーです") == ["東", "京", "タ", "ワ", "ー", "で", "す"]
    assert cer("我爱北京天安门", "我爱北京天安") == pytest.approx(1 / 7)
    assert wer("我爱北京天安门", "我爱北京天安") == pytest.approx(1 / 7)
    assert cer("我爱北京天安门", "我爱南京天安门") == pytest.approx(1 / 7)


def test_cosine_similarity_hand_computed():
    assert cosine_similarity([1, 0], [0, 1]) == pytest.approx(0.0)
    assert cosine_similarity([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert cosine_similarity([1, 0], [-1, 0]) == pytest.approx(-1.0)
    assert cosine_similarity([3, 4], [4, 3]) == pytest.approx(24 / 25)
    assert cosine_similarity([0, 0], [1, 1]) == 0.0
    with pytest.raises(ValueError):
        cosine_similarity([1, 2], [1, 2, 3])


def test_centroid_of_unit_vectors():
    c = centroid([np.array([2.0, 0.0]), np.array([0.0, 5.0])])
    np.testing.assert_allclose(c, [0.5, 0.5])
    assert cosine_similarity(c, [1, 1]) == pytest.approx(1.0)


def test_duration_ratio_and_mean():
    assert duration_ratio(3.0, 2.0) == pytest.approx(1.5)
    assert duration_ratio(1.0, 0.0) is None
    assert mean([1.0, None, 3.0, math.nan]) == pytest.approx(2.0)
    assert mean([None]) is None


# ---- the choice rule on planted scores ----


def _c(name, step, sim, cer_, failures=0, n=8):
    return CandidateScore(name, step, sim, cer_, utterances=n, failures=failures)


def test_choice_takes_the_earliest_checkpoint_near_the_best():
    scores = [
        _c("base", None, 0.50, 0.10),
        _c("step_100", 100, 0.60, 0.10),
        _c("step_200", 200, 0.695, 0.11),  # within 0.02 of the best and CER within 0.02 of base
        _c("step_300", 300, 0.70, 0.10),
    ]
    choice = choose_checkpoint(scores, similarity_margin=0.02, cer_margin=0.02)
    assert choice.chosen == "step_200"
    assert choice.step == 200
    assert choice.eligible == ["step_200", "step_300"]
    assert choice.best_similarity == pytest.approx(0.70)
    assert choice.beats_base
    assert choice.flags == []


def test_choice_skips_a_checkpoint_whose_cer_regressed():
    scores = [
        _c("base", None, 0.50, 0.10),
        _c("step_100", 100, 0.70, 0.20),  # best similarity, but CER 10 points worse than base
        _c("step_200", 200, 0.69, 0.11),
    ]
    choice = choose_checkpoint(scores, similarity_margin=0.02, cer_margin=0.02)
    assert choice.chosen == "step_200"
    # a wider CER margin admits the earlier one
    assert choose_checkpoint(scores, similarity_margin=0.02, cer_margin=0.2).chosen == "step_100"


def test_choice_skips_failed_candidates_and_flags_when_nothing_qualifies():
    scores = [
        _c("base", None, 0.50, 0.10),
        _c("step_100", 100, 0.90, 0.05, failures=8),  # produced no audio at all
        _c("step_200", 200, 0.60, 0.40),
        _c("step_300", 300, 0.55, 0.30),
    ]
    choice = choose_checkpoint(scores)
    assert choice.chosen == "step_300"  # lowest CER among the ones that produced audio
    assert "no_checkpoint_within_cer_margin" in choice.flags
    assert not choice.beats_base
    assert "CER" in choice.beats_base_reason


def test_publish_gate_when_fine_tuning_made_it_worse():
    scores = [_c("base", None, 0.80, 0.05), _c("step_100", 100, 0.70, 0.05), _c("step_200", 200, 0.71, 0.05)]
    choice = choose_checkpoint(scores)
    assert choice.chosen == "step_100"  # 0.70 is within 0.02 of 0.71
    assert not choice.beats_base
    assert "not above the base" in choice.beats_base_reason


def test_small_gain_is_flagged():
    scores = [_c("base", None, 0.700, 0.05), _c("step_100", 100, 0.705, 0.05)]
    choice = choose_checkpoint(scores, similarity_margin=0.02)
    assert choice.beats_base
    assert "gain_within_similarity_margin" in choice.flags


def test_choice_needs_a_checkpoint_and_valid_margins():
    with pytest.raises(UserError, match="no checkpoint"):
        choose_checkpoint([_c("base", None, 0.5, 0.1)])
    with pytest.raises(UserError, match="margins"):
        choose_checkpoint([_c("step_1", 1, 0.5, 0.1)], similarity_margin=-1)
