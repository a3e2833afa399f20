"""Letter extraction from free text: the phrasings models use, and hedges that must not be guessed."""

import pytest

from gym_qa.answer_extraction import extract_answer_form, extract_letter, extract_stated_option

OPTIONS = [
    "salto backward tucked",
    "round-off, flic-flac on, stretched salto backward off",
    "salto backward tucked with 1 twist",
    "giant circle backward",
]

PHRASINGS = [
    # plain letters
    ("C", "C"),
    ("c", "C"),
    ("(C)", "C"),
    ("[C]", "C"),
    ("C.", "C"),
    ("C)", "C"),
    ("**C**", "C"),
    ("  c \n", "C"),
    ("A", "A"),
    ("A.", "A"),
    # answer sentences
    ("Answer: C", "C"),
    ("ANSWER: D", "D"),
    ("answer - b", "B"),
    ("answer: c.", "C"),
    ("The answer is C.", "C"),
    ("The answer is: C", "C"),
    ("The correct answer is (D) giant circle backward.", "D"),
    ("My answer: (c)", "C"),
    ("Option C", "C"),
    ("I think it's C.", "C"),
    ("It is B", "B"),
    ("D is correct", "D"),
    ("answer is a", "A"),
    # letter followed by option text
    ("C. salto backward tucked with 1 twist", "C"),
    ("C salto backward tucked with 1 twist", "C"),
    ("A salto backward tucked", "A"),
    ("C) giant circle", "C"),
    # option text alone (a longer option wins over the one it contains)
    ("salto backward tucked with 1 twist", "C"),
    ("Salto backward tucked.", "A"),
    ("giant circle backward", "D"),
    ("It's giant circle backward, I think", "D"),
    ("The athlete performs a salto backward tucked with 1 twist.", "C"),
    ("The answer is a salto backward tucked", "A"),
    # refusals and hedges: unparseable
    ("", None),
    ("I cannot tell", None),
    ("Sorry, I can't see the video.", None),
    ("I'm not sure, maybe C", None),
    ("It is hard to tell from these frames.", None),
    ("Neither", None),
    ("None of the options", None),
    # adversarial: several letters, negations, contradictions, out of range
    ("A or B", None),
    ("Either B or C", None),
    ("B and C", None),
    ("A, B", None),
    ("B/C", None),
    ("not C", None),
    ("The answer is not A", None),
    ("The answer is C, not B.", None),
    ("C. salto backward tucked", None),  # letter C with option A's exact text
    ("salto backward tucked or giant circle backward", None),
    ("What gymnastics move is this athlete performing? A.x B.y C.z D.w", None),
    ("E", None),
    ("3", None),
]


@pytest.mark.parametrize("text, expected", PHRASINGS)
def test_phrasings(text: str, expected: str | None):
    assert extract_letter(text, OPTIONS) == expected


def test_enough_phrasings_including_adversarial():
    assert len(PHRASINGS) >= 25 and sum(expected is None for _, expected in PHRASINGS) >= 10


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Yes", "A"),
        ("yes.", "A"),
        ("No", "B"),
        ("No, it is not.", "B"),
        ("Yes, the body stays stretched.", "A"),
        ("B. no", "B"),
        ("A", "A"),
        ("Yes and no", None),
        ("I don't know", None),
        ("C", None),
    ],
)
def test_yes_no_questions(text: str, expected: str | None):
    assert extract_letter(text, ["yes", "no"]) == expected


def test_options_as_mapping_and_none_text():
    assert extract_letter("b", {"A": "x", "B": "y"}) == "B"
    assert extract_letter(None, OPTIONS) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("C", "C"),
        ("C.", "C"),
        (" C. salto backward tucked ", "C"),
        ("C. the text of another option", "C"),  # the letter commits; the text is not checked
        ("B.\nsalto", "B"),
        ("c. salto", None),  # the trained form is upper case
        ("C salto", None),  # no dot: not the form
        ("C.salto", None),  # the form has a space after the dot
        ("(C) salto", None),
        ("The answer is C.", None),
        ("E. salto", None),  # out of range for four options
        ("", None),
        (None, None),
    ],
)
def test_answer_form(text, expected):
    assert extract_answer_form(text, 4) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("C. salto backward tucked with 1 twist", "C"),  # the form, consistent
        ("C. salto backward tucked", "A"),  # the stated text is A's: the text decides
        ("C. Salto  backward tucked.", "A"),  # case, blanks and a final full stop ignored
        ("giant circle backward", "D"),  # a bare option text
        ("C. salto backward", "C"),  # no option's text: the form's letter
        ("C.", "C"),
        ("C", "C"),
        ("E. giant circle backward", "D"),  # an out-of-range letter, but D's text
        ("E. salto", None),  # neither an option text nor a letter in range
        ("The answer is C.", None),  # not the form, not an option's text
        ("", None),
        (None, None),
    ],
)
def test_stated_option(text, expected):
    assert extract_stated_option(text, OPTIONS) == expected
