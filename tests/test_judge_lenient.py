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
    ("It scores -2 (range -5..5)", -3, 3, -2.0),
    ("1) checks out\n2) complete\nOverall 0.9", 0, 1, 0.9),  # list numbers are not scores
])
def test_one_score_in_range_is_the_score(text, lo, hi, score):
    got, note = parse_score(text, lo, hi)
    assert got == score and LENIENT_MARK in note


@pytest.mark.parametrize("text, hi, why", [
    ("2 + 3 = 5", 10, "several numbers in 0..10 (2, 3, 5)"),
    ("7/10 at first, then 8/10", 10, "several numbers in 0..10 (7, 8)"),
    ("The answer is correct.", 10, "no number in 0..10"),
    ("Score: 70", 10, "no number in 0..10"),
    ("Step 1 checks it; 0.8 overall", 1, "several numbers in 0..1 (0.8, 1)"),  # "1" is in range too
    ("1. The reply is off-topic.", 1, "no number in 0..1"),  # list numbering, not a score
])
def test_ambiguous_or_missing_scores_fail_with_a_reason(text, hi, why):
    with pytest.raises(JudgeParseError, match="read leniently") as err:
        parse_score(text, 0, hi)
    assert why in str(err.value)


def test_cut_off_json_is_a_parse_failure_not_read_leniently():
    with pytest.raises(JudgeParseError, match="cut off") as err:  # the 3 is in a step, not the result
        parse_score('{"steps": [{"description": "found 3 errors"}], "result": ', 0, 10)
    assert "read leniently," not in str(err.value)
    with pytest.raises(JudgeParseError, match="cut off"):  # "correct" is in a step, not the result
        parse_label('{"steps":[{"description":"the answer is correct"', LABELS)
    with pytest.raises(JudgeParseError, match="cut off"):
        parse_score('[{"step": "7 of them pass"', 0, 10)


def test_the_same_score_repeated_is_one_score():
    assert parse_score("7. Yes, 7 is fair.", 0, 10)[0] == 7.0
