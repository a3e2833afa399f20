"""Which option letter a free-text answer chooses — or ``None`` when it does not choose exactly one.

Accepted (for options A–D): "C", "c", "(C)", "[C]", "C.", "C)", "**C**", "Answer: C", "The answer is C.",
"Option C", "I'd go with C", "C. salto backward…", "C salto backward…" (letter followed by its own
text), and the bare option text (case-insensitive, a longer option wins over an option it contains).
Unparseable (``None``), deliberately: empty text; refusals ("I cannot tell", "not sure", "sorry");
any negated letter ("not C", "isn't B"); "neither"/"none of"; two letters offered together ("A or B",
"B and C", "A, B", "A/B"); two different letters or option texts in one answer; a letter whose stated
text is exactly another option's text ("C. <text of A>"); letters outside the question's range.
Numbers ("3") are not read as letters. A hedge should cost the model the question, not be guessed.

:func:`extract_answer_form` reads the other way, for a model trained to answer in one form (the MLLM's
stage B answers, ``"C. <option text>"``): exactly that form, whose leading letter is the answer, and
nothing else. It accepts "C", "C." and "C. <any text>" — the letter commits, the text after it is the
model's restatement and is not checked (so "C. <text of A>" reads C, where :func:`extract_letter` says
the answer contradicts itself) — and rejects everything that does not start with the form.

:func:`extract_stated_option` reads the same form by its *text*: the answer is the option whose text the
model states ("C. <text of A>" reads A), the letter deciding only when the stated text is no option's
(MMBench-style matching of an answer's content to the choices). It measures what the model says, where
the form's letter measures whether it also binds that content to the letter it was shown: a small LLM
that names the right element under the wrong letter is right by the one and wrong by the other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

from gym_qa.questions import OPTION_LETTERS

_REFUSAL_RE = re.compile(
    r"\b(?:can\s*not|can't|cannot|unable|not sure|unsure|don't know|do not know|impossible|no way to|sorry|"
    r"not possible|hard to (?:tell|say)|difficult to (?:tell|say)|not enough information|insufficient|"
    r"unclear|uncertain)\b",
    re.IGNORECASE,
)
_NEITHER_RE = re.compile(r"\b(?:neither|none of|no option|no answer)\b", re.IGNORECASE)
# A letter is a "letter token" when it stands alone: not inside a word, a number or a hyphenated name.
_ALONE_BEFORE = r"(?<![A-Za-z0-9'’\-])"
_ALONE_AFTER = r"(?![A-Za-z0-9'’\-])"
_NEGATION_RE = re.compile(
    r"\b(?:not|isn't|isnt|never|except|rather than|instead of)\s+(?:the\s+)?"
    r"(?:option\s+|answer\s+|choice\s+)?"
    r"[(\[]?([A-Za-z])[)\]]?" + _ALONE_AFTER + r"(?!\s+[a-z])",
    re.IGNORECASE,
)
_ALTERNATIVES_RE = re.compile(
    _ALONE_BEFORE + r"[(\[]?([A-Z])[)\]]?\s*(?:,|/|&|\bor\b|\band\b)\s*(?:maybe\s+|possibly\s+)?"
    r"[(\[]?([A-Z])[)\]]?" + _ALONE_AFTER
)
_ANSWER_FORM_RE = re.compile(r"([A-Z])(?:\.(?:\s.*)?)?", re.DOTALL)
_BARE_RE = re.compile(r"[(\[]?\s*([A-Za-z])\s*[)\]]?\s*[.:)!]?")
_LEADING_RE = re.compile(r"[(\[]?([A-Za-z])[)\].:]\s*(.*)", re.DOTALL)
_LEADING_SPACE_RE = re.compile(r"([A-Z])\s+(.+)", re.DOTALL)
_KEYWORD_RE = re.compile(
    r"\b(?:answer|option|choice)\b(?:\s+(?:is|would be|should be|will be))?\s*[:=\-]?\s*[(\[]?([A-Za-z])"
    + _ALONE_AFTER
    + r"([)\]]?)(\s+[A-Za-z])?",
    re.IGNORECASE,
)
_PAREN_RE = re.compile(r"[(\[]([A-Z])[)\]]")
_TOKEN_RE = re.compile(_ALONE_BEFORE + r"([A-Z])" + _ALONE_AFTER)
_MARKUP_RE = re.compile(r"[*_`\"“”‘]+")


def _normalise(text: str) -> str:
    return " ".join(_MARKUP_RE.sub(" ", text).split())


@lru_cache(maxsize=4096)
def _option_pattern(option: str) -> re.Pattern[str]:
    words = re.escape(" ".join(option.lower().split()))
    return re.compile(r"(?<![a-z0-9])" + words + r"(?![a-z0-9])")


def _option_hits(text: str, options: Sequence[str]) -> tuple[set[int], list[tuple[int, int]]]:
    """Options whose text occurs in ``text`` (word-bounded, case-insensitive) and the spans found.

    An option found only inside the occurrence of a longer option ("giant circle backward" inside
    "giant circle backward with 0.5 turn") is not counted: the answer names the longer one.
    """
    lowered = " ".join(text.lower().split())
    spans: dict[int, list[tuple[int, int]]] = {}
    for i, option in enumerate(options):
        if option.strip():
            found = [m.span() for m in _option_pattern(option).finditer(lowered)]
            if found:
                spans[i] = found
    hits = set()
    for i, own in spans.items():
        covered = all(
            any(
                j != i and len(options[j]) > len(options[i]) and s <= a and b <= e
                for j in spans
                for s, e in spans[j]
            )
            for a, b in own
        )
        if not covered:
            hits.add(i)
    return hits, [span for found in spans.values() for span in found]


def _same_option(text: str, option: str) -> bool:
    return " ".join(text.lower().strip(" .!").split()) == " ".join(option.lower().split())


def extract_letter(text: str | None, options: Sequence[str] | Mapping[str, str]) -> str | None:
    """The single option letter ``text`` chooses among ``options`` (texts in letter order, or a
    letter → text mapping), or ``None`` (see the module docstring for what counts as a choice)."""
    if isinstance(options, Mapping):
        options = [options[letter] for letter in OPTION_LETTERS[: len(options)]]
    letters = OPTION_LETTERS[: len(options)]
    t = _normalise(text or "")
    if not t:
        return None
    if _REFUSAL_RE.search(t) or _NEITHER_RE.search(t) or _NEGATION_RE.search(t):
        return None
    if m := _BARE_RE.fullmatch(t):
        letter = m.group(1).upper()
        return letter if letter in letters else None
    for m in _ALTERNATIVES_RE.finditer(t):
        if m.group(1) != m.group(2) and m.group(1) in letters and m.group(2) in letters:
            return None

    found: set[str] = set()
    rest: str | None = None  # the text following a leading letter, to check it against the options
    if (m := _LEADING_RE.fullmatch(t)) and m.group(1).upper() in letters:
        found.add(m.group(1).upper())
        rest = m.group(2)
    elif (m := _LEADING_SPACE_RE.fullmatch(t)) and m.group(1) in letters:
        # "C salto backward…": a letter only if its own option text follows (else "A" is an article).
        index = letters.index(m.group(1))
        if m.group(2).lower().startswith(" ".join(options[index].lower().split())):
            found.add(m.group(1))
            rest = m.group(2)
    for m in _KEYWORD_RE.finditer(t):
        letter, closing, next_word = m.group(1), m.group(2), m.group(3)
        # "the answer is a salto…": a lower-case letter followed by a word is an article, not a choice.
        if letter.islower() and next_word and not closing:
            continue
        if letter.upper() in letters:
            found.add(letter.upper())
    text_hits, spans = _option_hits(t, options)
    # Letter tokens elsewhere ("I think it's C"), outside the option texts quoted in the answer. "A" and
    # "I" are too often an article or a pronoun to count alone.
    masked_text = t
    if len(t.lower()) == len(t):  # spans index the lower-cased text; equal lengths for nearly all text
        for a, b in spans:
            masked_text = masked_text[:a] + " " * (b - a) + masked_text[b:]
    found.update(m.group(1) for m in _PAREN_RE.finditer(masked_text) if m.group(1) in letters)
    found.update(
        m.group(1) for m in _TOKEN_RE.finditer(masked_text) if m.group(1) in letters[1:] and m.group(1) != "I"
    )

    if len(found) > 1:
        return None
    if len(found) == 1:
        letter = found.pop()
        own = options[letters.index(letter)]
        if rest is not None and not _same_option(rest, own) and any(_same_option(rest, o) for o in options):
            return None  # "C. <the text of A>": the answer contradicts itself
        return letter
    return letters[text_hits.pop()] if len(text_hits) == 1 else None


def extract_answer_form(text: str | None, num_options: int) -> str | None:
    """The letter of an answer in the trained form ``"<letter>. <text>"`` (or the letter alone, with or
    without its dot) among ``num_options`` options; ``None`` for any other text (see the module docstring).
    Leading and trailing blanks are ignored; the letter must be upper case and in range."""
    m = _ANSWER_FORM_RE.fullmatch((text or "").strip())
    if m is None:
        return None
    letter = m.group(1)
    return letter if letter in OPTION_LETTERS[:num_options] else None


def extract_stated_option(text: str | None, options: Sequence[str]) -> str | None:
    """The option an answer in the trained form ``"<letter>. <text>"`` states: the letter of the one
    option whose text equals the stated text (case, blanks and a final full stop ignored; a bare option
    text also counts), else the form's own letter (:func:`extract_answer_form`), else ``None``."""
    t = (text or "").strip()
    m = _ANSWER_FORM_RE.fullmatch(t)
    stated = t if m is None else t[2:].strip()  # after "C." (nothing for "C" alone)
    same = [i for i, option in enumerate(options) if stated and _same_option(stated, option)]
    if len(same) == 1:
        return OPTION_LETTERS[same[0]]
    return extract_answer_form(t, len(options))
