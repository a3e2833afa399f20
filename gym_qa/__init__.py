"""Gymnastics domain: FineGym metadata and hierarchy, the SynthGym generator, Gym-QA questions and scoring.

This package imports no torch: it is the bottom of the dependency graph
(gym_qa <- sefar_encoder <- mllm).

The Gym-QA API used by the other stages is re-exported here::

    from gym_qa import load_questions, render_prompt, rotate_options, extract_letter, score
"""

from gym_qa.answer_extraction import extract_letter
from gym_qa.clips import Clip, clips_from_list
from gym_qa.hierarchy import Hierarchy, load_hierarchy
from gym_qa.hierarchy_files import Element, HierarchyError
from gym_qa.question_generator import GeneratorConfig, QuestionGenerator
from gym_qa.questions import (
    Question,
    QuestionFormatError,
    circular_questions,
    load_questions,
    render_prompt,
    rotate_options,
    write_questions,
)
from gym_qa.scoring import Prediction, PredictionError, evaluate, read_predictions, report_to_markdown, score
from gym_qa.splits import build_label_splits

__all__ = [
    "Clip",
    "Element",
    "GeneratorConfig",
    "Hierarchy",
    "HierarchyError",
    "Prediction",
    "PredictionError",
    "Question",
    "QuestionFormatError",
    "QuestionGenerator",
    "build_label_splits",
    "circular_questions",
    "clips_from_list",
    "evaluate",
    "extract_letter",
    "load_hierarchy",
    "load_questions",
    "read_predictions",
    "render_prompt",
    "report_to_markdown",
    "rotate_options",
    "score",
    "write_questions",
]
