"""The lenient reading of prose judge answers (graders/judge_parse.py): only unambiguous answers parse."""

import pytest

from graders.judge_parse import LENIENT_MARK, JudgeParseError, parse_label, parse_score

LABELS = ["correct", "incorrect"]


@pytest.mark.parametrize("text, label", [
    ("The answer is correct.", "correct"),
    ("INCORRECT, since 2 + 3 is 5", "incorrect"),
    ("I think it's Correct!", "correct"),
])
def test_one_label_in_prose_is_that_label_and_marked_lenient(text, label):
    got, note = parse_label(text, LABELS)
    assert got == label and LENIENT_MARK in note


@pytest.mark.parametrize("text, why", [
    ("2 + 3 = 5", "names none"),
    ("correct or incorrect, hard to say", "several labels (correct, incorrect)"),
    ("corrected", "names none"),  # a label inside a longer word is not the label
])
def test_no_label_or_several_labels_fail_with_a_reason(text, why):
    with pytest.raises(JudgeParseError, match="read leniently") as err:
        parse_label(text, LABELS)
    assert why in str(err.value)


def test_a_label_inside_a_longer_label_does_not_count():
    got, _ = parse_label("That is not relevant at all.", ["relevant", "not relevant"])
    assert got == "not relevant"


def test_strict_answers_are_not_marked_lenient_and_json_is_not_read_leniently():
    assert parse_label('{"result": "correct"}', LABELS)[1] == "judge said 'correct'"
    assert LENIENT_MARK not in parse_score('{"result": 4, "steps": []}', 0, 10)[1]
    with pytest.raises(JudgeParseError) as err:  # JSON came back: its result must be a label, no guessing
        parse_label('{"result": "it is correct"}', LABELS)
    assert "read leniently" not in str(err.value)


@pytest.mark.parametrize("text, lo, hi, score", [
    ("Score: 7/10", 0, 10, 7.0),           # the /10 is the scale, not a second number
    ("I give it 3 out of 5.", 1, 5, 3.0),
    ("10/10, perfect", 0, 10, 10.0),
    ("The answer is 9.", 0, 10, 9.0),
    ("Step 1 checks it; 0.8 overall", 0, 1, 0.8),  # "1" is in range too: two values, see below
    ("It scores -2 (range -5..5)", -3, 3, -2.0),
])
def test_one_score_in_range_is_the_score(text, lo, hi, score):
    if text.startswith("Step 1"):
        with pytest.raises(JudgeParseError, match=r"several numbers in 0\.\.1 \(0\.8, 1\)"):
            parse_score(text, lo, hi)
        return
    got, note = parse_score(text, lo, hi)
    assert got == score and LENIENT_MARK in note


@pytest.mark.parametrize("text, why", [
    ("2 + 3 = 5", "several numbers in 0..10 (2, 3, 5)"),
    ("7/10 at first, then 8/10", "several numbers in 0..10 (7, 8)"),
    ("The answer is correct.", "no number in 0..10"),
    ("Score: 70", "no number in 0..10"),
])
def test_ambiguous_or_missing_scores_fail_with_a_reason(text, why):
    with pytest.raises(JudgeParseError, match="read leniently") as err:
        parse_score(text, 0, 10)
    assert why in str(err.value)


def test_the_same_score_repeated_is_one_score():
    assert parse_score("7. Yes, 7 is fair.", 0, 10)[0] == 7.0
