"""Video-blind reference answerers: chance level, position/length priors and the class-prior leak."""

import pytest
from conftest import FINEGYM_DIR

from gym_qa.clips import clips_from_list
from gym_qa.hierarchy import load_hierarchy
from gym_qa.question_generator import GeneratorConfig, QuestionGenerator
from gym_qa.questions import Question, circular_questions
from gym_qa.reference_answerers import (
    ReferenceAnswererError,
    answer_counts_from_labels,
    answer_counts_from_questions,
    build_reference_answerer,
)
from gym_qa.scoring import evaluate


@pytest.fixture(scope="module")
def setup():
    hierarchy = load_hierarchy(FINEGYM_DIR / "gym99_categories.txt")
    clips = clips_from_list(FINEGYM_DIR / "gym99_val_element.txt", hierarchy.num_classes)
    questions, _ = QuestionGenerator(hierarchy, GeneratorConfig()).generate(clips)
    return hierarchy, questions


def accuracy(questions: list[Question], name: str, **kwargs) -> float:
    report, _ = evaluate(questions, build_reference_answerer(name, questions, **kwargs))
    return report["modes"]["text"]["overall"]["accuracy"]


def test_random_answerer_is_at_chance(setup):
    _, questions = setup
    assert len(questions) == 8521
    assert abs(accuracy(questions, "random", seed=0) - 0.25) < 0.02
    assert abs(accuracy(questions, "random", seed=1) - 0.25) < 0.02
    assert abs(accuracy(questions, "first") - 0.25) < 0.001  # balanced letters: no position prior


def test_text_only_priors(setup):
    hierarchy, questions = setup
    train_labels = [int(line.split()[1]) for line in (FINEGYM_DIR / "gym99_train_element_v1.1.txt").open()]
    counts = answer_counts_from_labels(hierarchy, train_labels)
    assert accuracy(questions, "longest") < 0.30
    # The official (uniform) distractor sampling leaks the class prior; these bound that leak.
    assert accuracy(questions, "most_frequent", train_counts=counts) > 0.40
    assert accuracy(questions, "option_frequency") > 0.40
    # Fitting the prior on the evaluated questions themselves is the transductive upper bound.
    assert accuracy(questions, "most_frequent", train_counts=answer_counts_from_questions(questions)) > 0.45
    with pytest.raises(ReferenceAnswererError, match="needs training"):
        build_reference_answerer("most_frequent", questions)
    with pytest.raises(ReferenceAnswererError, match="unknown"):
        build_reference_answerer("oracle", questions)


def test_answerers_are_position_blind_under_rotation(setup):
    _, questions = setup
    subset = questions[:200]
    report, predictions = evaluate(subset, build_reference_answerer("longest", subset), circular=True)
    assert len(predictions) == len(circular_questions(subset))
    # A text-only rule picks the same option text in every rotation, so circular == plain accuracy.
    text = report["modes"]["text"]
    assert text["circular"]["overall"]["correct"] == text["overall"]["correct"]
