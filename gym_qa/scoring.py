"""Gym-QA evaluator: predictions against a question file → accuracy report (docs/DESIGN.md §Evaluator).

Predictions are JSON lines, one per question (or per rotated question, see below)::

    {"question_id": "0000042", "text": "The answer is C."}                       free-text mode
    {"question_id": "0000042", "option_scores": [12.1, 9.8, 7.3, 11.0],          option-likelihood mode
     "option_token_counts": [9, 7, 8, 8]}

``option_scores`` are negative log-likelihoods of each option's text (lower is better). The chosen option
minimises the summed NLL (``nll_sum``); with token counts the per-token mean (``nll_mean``, which does
not favour short options) is reported too. An exact tie for the minimum chooses nothing (a constant
scorer must not inherit a letter prior). A record may carry both ``text`` and ``option_scores``; every
mode present is reported. ``score(..., answer_form=True)`` also reads the text as the trained answer form
(mode ``answer_form``, :func:`gym_qa.answer_extraction.extract_answer_form`: "C. <text>" → C whatever
the text) and by the option text it states (mode ``option_text``,
:func:`~gym_qa.answer_extraction.extract_stated_option`: "C. <text of A>" → A), beside the free-text
reading (mode ``text``) of the same predictions.

Circular evaluation: predictions for rotated copies (``<id>#r<k>``, see
:func:`gym_qa.questions.rotate_options`) switch it on; a question then counts as correct only if the
original and all its ``n − 1`` rotations are answered correctly (a missing rotation counts as wrong).

Missing and unparseable predictions count as wrong and are listed. Accuracies come with counts and a
95 % Wilson interval, overall and per ``answer_type``, event and set (event/set need a hierarchy, and
either the clip list — video → label — or, for "what"/"event"/"set" questions, the answer's text).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gym_qa.answer_extraction import extract_answer_form, extract_letter, extract_stated_option
from gym_qa.hierarchy import Hierarchy
from gym_qa.hierarchy_files import EVENT_NAMES
from gym_qa.questions import OPTION_LETTERS, ROTATION_SEPARATOR, Question, circular_questions, rotate_options
from gym_qa.statistics import wilson_interval

MODES: tuple[str, ...] = ("text", "answer_form", "option_text", "nll_sum", "nll_mean")
TEXT_MODES: tuple[str, ...] = ("text", "answer_form", "option_text")  # read from the answer's text
UNKNOWN = "unknown"


class PredictionError(ValueError):
    """A predictions file or record is malformed; the message names the file and line."""


@dataclass(frozen=True)
class Prediction:
    """One model output for one (possibly rotated) question."""

    question_id: str
    text: str | None = None
    option_scores: tuple[float, ...] | None = None  # NLL per option, lower is better
    option_token_counts: tuple[int, ...] | None = None
    where: str = ""  # "file:line" for error messages


def parse_prediction(record: Any, where: str = "<prediction>") -> Prediction:
    """Validate one prediction record (a dict as read from JSON)."""
    if not isinstance(record, dict):
        raise PredictionError(f"{where}: expected a JSON object")
    question_id = record.get("question_id")
    if not isinstance(question_id, str) or not question_id:
        raise PredictionError(f"{where}: 'question_id' must be a non-empty string")
    text = record.get("text")
    if text is not None and not isinstance(text, str):
        raise PredictionError(f"{where}: 'text' must be a string")
    scores = record.get("option_scores")
    counts = record.get("option_token_counts")
    if scores is not None:
        if (
            not isinstance(scores, list)
            or not scores
            or not all(isinstance(s, int | float) and not isinstance(s, bool) for s in scores)
        ):
            raise PredictionError(f"{where}: 'option_scores' must be a non-empty list of numbers")
        if not all(math.isfinite(s) for s in scores):
            raise PredictionError(f"{where}: 'option_scores' holds NaN or infinity")
        scores = tuple(float(s) for s in scores)
    if counts is not None:
        if scores is None:
            raise PredictionError(f"{where}: 'option_token_counts' given without 'option_scores'")
        if (
            not isinstance(counts, list)
            or len(counts) != len(scores)
            or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in counts)
        ):
            raise PredictionError(f"{where}: 'option_token_counts' must be positive integers, one per score")
        counts = tuple(counts)
    if text is None and scores is None:
        raise PredictionError(f"{where}: a prediction needs 'text' or 'option_scores'")
    return Prediction(question_id, text, scores, counts, where)


def read_predictions(path: str | Path) -> dict[str, Prediction]:
    """Read a predictions JSONL file; blank lines are skipped, duplicate ids are an error."""
    path = Path(path)
    if not path.is_file():
        raise PredictionError(f"{path}: predictions file not found")
    predictions: dict[str, Prediction] = {}
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise PredictionError(f"{where}: invalid JSON ({err.msg})") from None
            prediction = parse_prediction(record, where)
            if prediction.question_id in predictions:
                first = predictions[prediction.question_id].where
                raise PredictionError(
                    f"{where}: question_id {prediction.question_id} already predicted at {first}"
                )
            predictions[prediction.question_id] = prediction
    return predictions


def write_predictions(path: str | Path, predictions: Iterable[Prediction]) -> None:
    """Write predictions as JSONL (only the fields that are set)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for p in predictions:
            record: dict[str, Any] = {"question_id": p.question_id}
            if p.text is not None:
                record["text"] = p.text
            if p.option_scores is not None:
                record["option_scores"] = list(p.option_scores)
            if p.option_token_counts is not None:
                record["option_token_counts"] = list(p.option_token_counts)
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------- choosing
def _argmin_unique(values: Sequence[float]) -> int | None:
    best = min(values)
    winners = [i for i, v in enumerate(values) if v == best]
    return winners[0] if len(winners) == 1 else None


def choose(question: Question, prediction: Prediction | None, mode: str) -> tuple[str | None, str]:
    """The letter a prediction picks in ``mode`` and why none: "", "missing", "unparseable" or "tie"."""
    if prediction is None:
        return None, "missing"
    if mode in TEXT_MODES:
        if prediction.text is None:
            return None, "missing"
        if mode == "text":
            letter = extract_letter(prediction.text, question.options)
        elif mode == "answer_form":
            letter = extract_answer_form(prediction.text, len(question.options))
        else:
            letter = extract_stated_option(prediction.text, question.options)
        return letter, "" if letter else "unparseable"
    if prediction.option_scores is None or (mode == "nll_mean" and prediction.option_token_counts is None):
        return None, "missing"
    if len(prediction.option_scores) != len(question.options):
        raise PredictionError(
            f"{prediction.where}: {len(prediction.option_scores)} option_scores for question "
            f"{question.question_id}, which has {len(question.options)} options"
        )
    values: Sequence[float] = prediction.option_scores
    if mode == "nll_mean":
        values = [
            s / c for s, c in zip(prediction.option_scores, prediction.option_token_counts or (), strict=True)
        ]
    index = _argmin_unique(values)
    return (OPTION_LETTERS[index], "") if index is not None else (None, "tie")


# ---------------------------------------------------------------------------------- grouping
class QuestionClasses:
    """Event and set of each question, from the clip list (video → label) or the answer's text."""

    def __init__(self, hierarchy: Hierarchy, video_labels: Mapping[str, int] | None = None) -> None:
        self.hierarchy = hierarchy
        self.video_labels = dict(video_labels or {})
        h = hierarchy
        self._event_by_text = {name: code for code, name in EVENT_NAMES.items()}
        self._set_by_text: dict[str, int] = {}
        for set_id in h.used_sets:
            self._set_by_text[h.set_display_name(set_id)] = set_id
            self._set_by_text[h.set_name(set_id)] = set_id

    def of(self, question: Question) -> tuple[str, str]:
        """(event code or "unknown", set id as text or "unknown")."""
        h = self.hierarchy
        label = self.video_labels.get(question.video)
        if label is not None and 0 <= label < h.num_classes:
            return h.event_of(label), str(h.set_of(label))
        answer = question.answer_text
        if question.answer_type == "what":
            labels = h.labels_with_name(answer)
            events = {h.event_of(x) for x in labels}
            sets = {h.set_of(x) for x in labels}
            # A name shared across sets/events (Gym99: "switch leap with 0.5 turn" on FX and BB) is ambiguous.
            return (events.pop() if len(events) == 1 else UNKNOWN), (
                str(sets.pop()) if len(sets) == 1 else UNKNOWN
            )
        if question.answer_type == "event":
            return self._event_by_text.get(answer, UNKNOWN), UNKNOWN
        if question.answer_type == "set" and answer in self._set_by_text:
            set_id = self._set_by_text[answer]
            return h.event_of(h.labels_in_set(set_id)[0]), str(set_id)
        return UNKNOWN, UNKNOWN


# ------------------------------------------------------------------------------------ scoring
class _Tally:
    def __init__(self) -> None:
        self.correct: dict[str, int] = defaultdict(int)
        self.total: dict[str, int] = defaultdict(int)

    def add(self, key: str, correct: bool) -> None:
        self.total[key] += 1
        self.correct[key] += int(correct)

    def block(self, key: str) -> dict[str, Any]:
        return accuracy_block(self.correct[key], self.total[key])

    def blocks(self) -> dict[str, dict[str, Any]]:
        return {key: self.block(key) for key in sorted(self.total)}


def accuracy_block(correct: int, total: int) -> dict[str, Any]:
    lo, hi = wilson_interval(correct, total)
    return {
        "correct": correct,
        "total": total,
        "accuracy": correct / total if total else None,
        "ci95": [round(lo, 6), round(hi, 6)],
    }


def _as_predictions(
    predictions: Mapping[str, Prediction] | Iterable[Prediction | dict],
) -> dict[str, Prediction]:
    if isinstance(predictions, Mapping):
        return dict(predictions)
    out: dict[str, Prediction] = {}
    for index, p in enumerate(predictions):
        prediction = p if isinstance(p, Prediction) else parse_prediction(p, f"<prediction #{index}>")
        if prediction.question_id in out:
            raise PredictionError(f"<prediction #{index}>: duplicate question_id {prediction.question_id}")
        out[prediction.question_id] = prediction
    return out


def score(
    questions: Sequence[Question],
    predictions: Mapping[str, Prediction] | Iterable[Prediction | dict],
    hierarchy: Hierarchy | None = None,
    video_labels: Mapping[str, int] | None = None,
    max_listed: int | None = None,
    answer_form: bool = False,
) -> dict[str, Any]:
    """Score predictions; returns the report dict (see module docstring; JSON-serialisable).

    ``max_listed`` caps the listed missing/unparseable ids (``None`` lists all). ``answer_form``: also
    report mode ``answer_form`` (texts read as the trained answer form).
    """
    preds = _as_predictions(predictions)
    by_id = {q.question_id: q for q in questions}
    circular = any(ROTATION_SEPARATOR in pid for pid in preds)
    unknown = [pid for pid in preds if pid.split(ROTATION_SEPARATOR, 1)[0] not in by_id]
    modes = [
        m
        for m in MODES
        if (m == "text" and any(p.text is not None for p in preds.values()))
        or (
            m in ("answer_form", "option_text")
            and answer_form
            and any(p.text is not None for p in preds.values())
        )
        or (m == "nll_sum" and any(p.option_scores is not None for p in preds.values()))
        or (m == "nll_mean" and any(p.option_token_counts is not None for p in preds.values()))
    ]
    classes = QuestionClasses(hierarchy, video_labels) if hierarchy is not None else None
    groups = {q.question_id: classes.of(q) for q in questions} if classes else {}
    missing_ids = [q.question_id for q in questions if q.question_id not in preds]

    report: dict[str, Any] = {
        "questions": len(questions),
        "predictions": len(preds),
        "missing": len(missing_ids),
        "missing_ids": missing_ids[:max_listed],
        "unknown_predictions": len(unknown),
        "unknown_prediction_ids": unknown[:max_listed],
        "circular": circular,
        "modes": {},
    }
    for mode in modes:
        overall, per_type, per_event, per_set = _Tally(), _Tally(), _Tally(), _Tally()
        circ_overall, circ_type = _Tally(), _Tally()
        failures: dict[str, list[dict[str, str]]] = defaultdict(list)
        for q in questions:
            letter, reason = choose(q, preds.get(q.question_id), mode)
            correct = letter == q.answer
            if reason and reason != "missing":
                item = {"question_id": q.question_id}
                if reason == "unparseable":
                    item["text"] = (preds[q.question_id].text or "")[:200]
                failures[reason].append(item)
            overall.add("all", correct)
            per_type.add(q.answer_type, correct)
            if classes:
                event, set_id = groups[q.question_id]
                per_event.add(event, correct)
                per_set.add(set_id, correct)
            if circular:
                all_correct = correct
                for k in range(1, len(q.options)):
                    rotated = rotate_options(q, k)
                    rotated_letter, _ = choose(rotated, preds.get(rotated.question_id), mode)
                    all_correct = all_correct and rotated_letter == rotated.answer
                circ_overall.add("all", all_correct)
                circ_type.add(q.answer_type, all_correct)
        result: dict[str, Any] = {"overall": overall.block("all"), "per_answer_type": per_type.blocks()}
        if classes and hierarchy is not None:
            order = [*EVENT_NAMES, UNKNOWN]  # canonical VT, FX, BB, UB order
            result["per_event"] = {
                key: {"name": EVENT_NAMES.get(key, key), **block}
                for key, block in sorted(per_event.blocks().items(), key=lambda item: order.index(item[0]))
            }
            result["per_set"] = {
                key: {"name": hierarchy.set_name(int(key)) if key != UNKNOWN else key, **block}
                for key, block in sorted(per_set.blocks().items(), key=_set_sort_key)
            }
        for reason in ("unparseable", "tie"):
            reads_text = mode in TEXT_MODES
            if reason == "unparseable" and not reads_text or reason == "tie" and reads_text:
                continue
            result[reason] = len(failures[reason])
            result[f"{reason}_items"] = failures[reason][:max_listed]
        if circular:
            result["circular"] = {"overall": circ_overall.block("all"), "per_answer_type": circ_type.blocks()}
        report["modes"][mode] = result
    return report


def _set_sort_key(item: tuple[str, Any]) -> tuple[int, str]:
    key = item[0]
    return (int(key), "") if key.isdigit() else (10**9, key)


def evaluate(
    questions: Sequence[Question],
    predict_fn: Callable[[Question], str | Prediction | dict],
    hierarchy: Hierarchy | None = None,
    video_labels: Mapping[str, int] | None = None,
    circular: bool = False,
) -> tuple[dict[str, Any], list[Prediction]]:
    """Run ``predict_fn`` on every question (and its rotations when ``circular``) and score it.

    ``predict_fn`` returns the answer text, a :class:`Prediction` or a prediction dict.
    """
    asked = circular_questions(questions) if circular else list(questions)
    predictions = []
    for q in asked:
        out = predict_fn(q)
        if isinstance(out, str):
            out = Prediction(q.question_id, text=out)
        elif isinstance(out, dict):
            out = parse_prediction({"question_id": q.question_id, **out}, f"<predict_fn {q.question_id}>")
        predictions.append(out)
    return score(questions, predictions, hierarchy, video_labels), predictions


# ----------------------------------------------------------------------------------- markdown
def _fmt(block: dict[str, Any]) -> str:
    if block["accuracy"] is None:
        return "– | 0 | – |"
    lo, hi = block["ci95"]
    counts = f"{block['correct']}/{block['total']}"
    return f"{100 * block['accuracy']:.2f} | {counts} | {100 * lo:.1f}–{100 * hi:.1f} |"


def report_to_markdown(report: dict[str, Any], title: str = "Gym-QA evaluation", max_items: int = 20) -> str:
    """Render a :func:`score` report as Markdown tables."""
    circular = ", circular evaluation" if report["circular"] else ""
    counts = (
        f"{report['questions']} questions, {report['predictions']} predictions, {report['missing']} missing"
    )
    lines = [f"# {title}", "", f"{counts}{circular}."]
    if report["unknown_predictions"]:
        lines.append(f"{report['unknown_predictions']} predictions name unknown question ids (ignored).")
    for mode, result in report["modes"].items():
        lines += [
            "",
            f"## Mode `{mode}`",
            "",
            "| group | accuracy % | correct/total | 95 % CI |",
            "|---|---|---|---|",
            f"| **overall** | {_fmt(result['overall'])}",
        ]
        lines += [f"| type: {t} | {_fmt(b)}" for t, b in result["per_answer_type"].items()]
        lines += [f"| event: {b['name']} | {_fmt(b)}" for b in result.get("per_event", {}).values()]
        lines += [f"| set {k}: {b['name']} | {_fmt(b)}" for k, b in result.get("per_set", {}).items()]
        if "circular" in result:
            lines += [
                "",
                "Circular (correct in every rotation):",
                "",
                "| group | accuracy % | correct/total | 95 % CI |",
                "|---|---|---|---|",
                f"| **overall** | {_fmt(result['circular']['overall'])}",
            ]
            lines += [f"| type: {t} | {_fmt(b)}" for t, b in result["circular"]["per_answer_type"].items()]
        for reason in ("unparseable", "tie"):
            if result.get(reason):
                lines += ["", f"{result[reason]} {reason} answers (counted wrong), first ones:", ""]
                lines += [
                    f"- `{item['question_id']}` {json.dumps(item.get('text', ''))}"
                    for item in result[f"{reason}_items"][:max_items]
                ]
    return "\n".join(lines) + "\n"
