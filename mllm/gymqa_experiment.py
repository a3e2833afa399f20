"""One Gym-QA comparison job: a video encoder's features → MLLM stage A → stage B → Gym-QA accuracy — what it
is, what its outputs depend on, and its result read from them. ``scripts/bench_gymqa.py`` runs jobs
(``run_job``: each step an entry point, skipped when its output exists) and ``scripts/quickstart.py``
runs two of them.

    job = GymQAJob(encoder="sefar", weights="runs/quickstart/encoder", data_root="data/synthgym-quickstart",
                   llm="runs/quickstart/tiny_llm", questions="runs/quickstart/gymqa/test.json",
                   config="configs/mllm/quickstart.yaml", out_dir="runs/quickstart/mllm_sefar", seed=0)

The steps (``STEPS``) and their outputs (:func:`step_output`)::

    features     mllm.feature_cache over the labeled train, val and test clips       features.json
    align        scripts/train_mllm.py --stage align     (projector; LLM frozen)      align/metrics.json
    instruct     scripts/train_mllm.py --stage instruct  (projector + LoRA)           instruct/metrics.json
    eval         scripts/eval_mllm_gymqa.py --mode both  (generate + likelihood)      eval/report.json
    letter       scripts/eval_mllm_gymqa.py --mode letter (jobs with trained_form)    letter/report.json
    classifier4  scripts/eval_mllm_gymqa.py --mode classifier4 (sefar encoders only)  classifier4/report.json
    ──► result.json: accuracy per mode (%), per answer type, stage metrics, seconds per step

``job.json`` records what the outputs were made from (encoder fingerprint, data root, LLM, seed, the
stage config's content and overrides, the question file's hash). When any of it changes, the outputs
are stale: the job folder is emptied and every step runs again (the reason is printed).

``seed`` seeds stage A/B (initialisation, data order, dropout); the encoder and the questions stay the
same, so seeds measure the MLLM training's variance. The stage config (``configs/mllm/*.yaml``) gives
every training setting, including ``data.label_rate`` and the question types; its ``data.root``,
``llm``, ``features`` and output folders are set from the job.

Accuracy modes (``MODES``): ``generate`` — greedy answer text, letter extracted (evaluator mode
``text``); ``generate_form`` — the same answers read as the trained form "C. <text>" (``answer_form``:
the leading letter, whatever the text; absent from reports written before it existed); ``generate_text``
— the same answers read by the option text they state (``option_text``: "C. <text of A>" is A, the letter
deciding only when the text is no option's; an eval report written before the mode existed is re-scored
from its predictions by :func:`rescore_eval`); ``likelihood`` —
lowest summed option NLL (``nll_sum``); ``letter`` — constrained decoding over the option letters
(``mllm.generation.choose_letter``; evaluator mode ``text`` of the letter alone); ``classifier4`` — the
SeFAR encoder's own classifier restricted to the options' classes, on the questions whose options are
element names (``gym_qa.classifier_answerer``). ``generate_form`` and ``letter`` only for jobs with
``trained_form``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gym_qa.clips import clip_id_of
from gym_qa.hierarchy import load_hierarchy
from gym_qa.lists import read_list
from gym_qa.questions import load_questions
from gym_qa.scoring import read_predictions, report_to_markdown, score
from mllm.training_config import MLLMTrainConfig
from sefar_encoder.runtime.atomic import write_text_atomic
from sefar_encoder.runtime.config import load_config

STEPS: tuple[str, ...] = ("features", "align", "instruct", "eval", "letter", "classifier4")
# accuracy mode -> (step whose report holds it, the evaluator's mode key in that report)
MODES: dict[str, tuple[str, str]] = {
    "generate": ("eval", "text"),
    "generate_form": ("eval", "answer_form"),
    "generate_text": ("eval", "option_text"),
    "likelihood": ("eval", "nll_sum"),
    "letter": ("letter", "text"),
    "classifier4": ("classifier4", "nll_sum"),
}
RESULT_FILE = "result.json"
JOB_FILE = "job.json"


class ExperimentError(RuntimeError):
    """A step failed; the message names the step and the entry point's error output or exit code."""


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class GymQAJob:
    """One (encoder, seed) run of the Gym-QA comparison."""

    encoder: str  # mllm.encoders.ENCODERS name: sefar, framepool, clip, eva
    weights: str  # encoder checkpoint directory / file, or hub id
    data_root: str  # data set folder (splits/<rate>/train.csv, val.csv, test.csv, categories)
    llm: str  # LLM directory (the tiny LLM) or hub id
    questions: str  # Gym-QA JSON of the test clips (the same file for every encoder compared)
    config: str  # stage config YAML (configs/mllm/...): both stages' settings
    out_dir: str  # job folder
    seed: int = 0  # stage A/B seed
    cache_root: str = "data/features"  # feature cache root (shared by jobs: one folder per encoder)
    encoder_options: dict[str, Any] = field(default_factory=dict)  # builder options of the encoder
    overrides: list[str] = field(default_factory=list)  # extra train_mllm key=value overrides
    max_new_tokens: int = 48  # generate mode: answer length bound
    # Also the trained answer form's modes: letter (step "letter") and generate_form (the eval step's answers
    # read as "C. <text>"). Not an input of the other steps.
    trained_form: bool = False
    progress: bool = True

    @property
    def path(self) -> Path:
        return Path(self.out_dir)


def stage_config(job: GymQAJob) -> MLLMTrainConfig:
    """The resolved ``train_mllm`` config of the job (stage A section; both sections are in it)."""
    return load_config(MLLMTrainConfig, job.config, train_overrides(job))


def train_overrides(job: GymQAJob) -> list[str]:
    """The ``train_mllm.py`` overrides that point the stage config at this job."""
    out = job.path
    options = json.dumps(job.encoder_options)  # JSON is YAML: parsed back by the override parser
    return [
        f"seed={job.seed}",
        f"llm.name_or_path={job.llm}",
        f"features.encoder={job.encoder}",
        f"features.weights={job.weights}",
        f"features.options={options}",
        f"features.cache_root={job.cache_root}",
        f"data.root={job.data_root}",
        f"align.out_dir={out / 'align'}",
        f"instruct.out_dir={out / 'instruct'}",
        f"instruct.init_from={out / 'align' / 'mllm'}",
        f"progress={str(job.progress).lower()}",
        *job.overrides,
    ]


def split_lists(data_root: str | Path, label_rate: int) -> dict[str, Path]:
    """The labeled train list of ``label_rate`` and the val/test lists of a data set folder."""
    root = Path(data_root)
    lists = {
        "train": root / "splits" / str(label_rate) / "train.csv",
        "val": root / "val.csv",
        "test": root / "test.csv",
    }
    for name, path in lists.items():
        if not path.is_file():
            raise ExperimentError(
                f"{path}: {name} list not found (data root {root}, label rate {label_rate})"
            )
    return lists


def local_files_state(path: str | Path) -> dict[str, list[int]] | None:
    """Size and modification time of each file of a local model folder (None for a hub id): a rebuilt
    model changes it without hashing gigabytes."""
    path = Path(path)
    if not path.is_dir():
        return None
    return {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(path.iterdir()) if f.is_file()}


def job_inputs(job: GymQAJob, fingerprint: str) -> dict[str, Any]:
    """What the job's outputs depend on (compared with the recorded ``job.json``)."""
    return {
        "encoder": job.encoder,
        "encoder_fingerprint": fingerprint,
        "encoder_options": job.encoder_options,
        "data_root": str(Path(job.data_root).resolve()),
        "llm": job.llm,
        "llm_files": local_files_state(job.llm),
        "seed": job.seed,
        "config": str(job.config),
        "config_sha256": file_sha256(job.config),
        "overrides": list(job.overrides),
        "questions_sha256": file_sha256(job.questions),
        "max_new_tokens": job.max_new_tokens,
    }


def step_output(job: GymQAJob, step: str) -> Path:
    return {
        "features": job.path / "features.json",
        "align": job.path / "align" / "metrics.json",
        "instruct": job.path / "instruct" / "metrics.json",
        "eval": job.path / "eval" / "report.json",
        "letter": job.path / "letter" / "report.json",
        "classifier4": job.path / "classifier4" / "report.json",
    }[step]


def job_steps(job: GymQAJob) -> list[str]:
    """The steps of ``job``: letter when asked for, classifier4 only for SeFAR encoders (the others have
    no classifier)."""
    skipped = {"classifier4"} if job.encoder != "sefar" else set()
    if not job.trained_form:
        skipped.add("letter")
    return [s for s in STEPS if s not in skipped]


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def prepare_job_dir(job: GymQAJob, inputs: dict[str, Any], force: bool, log: Callable[[str], None]) -> None:
    """Empty the job folder when forced or when its recorded inputs differ; then record the inputs."""
    recorded_file = job.path / JOB_FILE
    recorded = read_json(recorded_file)["inputs"] if recorded_file.is_file() else None
    reason = "forced" if force else None
    if recorded is not None and recorded != inputs and reason is None:
        changed = sorted(k for k in inputs.keys() | recorded.keys() if inputs.get(k) != recorded.get(k))
        reason = f"inputs changed ({', '.join(changed)})"
    if reason and job.path.is_dir():
        log(f"{job.path}: {reason}; running every step again")
        for child in job.path.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    if reason or recorded is None:
        write_json(recorded_file, {"job": asdict(job), "inputs": inputs})


def mode_block(report: dict[str, Any], evaluator_mode: str) -> dict[str, Any]:
    block = report["modes"].get(evaluator_mode)
    if block is None:
        raise ExperimentError(f"report has no mode {evaluator_mode!r} (modes: {sorted(report['modes'])})")
    return block


def percent(block: dict[str, Any]) -> float | None:
    return None if block["accuracy"] is None else 100 * block["accuracy"]


def collect_result(job: GymQAJob) -> dict[str, Any]:
    """The job's numbers, read from its steps' output files (never recomputed)."""
    result: dict[str, Any] = {
        "encoder": job.encoder,
        "seed": job.seed,
        "out_dir": str(job.path),
        "accuracy": {},
        "correct_total": {},
        "per_answer_type": {},
        "reports": {},
    }
    for mode, (step, key) in MODES.items():
        path = step_output(job, step)
        if step not in job_steps(job) or (
            mode in ("generate_form", "generate_text") and not job.trained_form
        ):
            continue
        report = read_json(path)
        if key not in report["modes"] and key in ("answer_form", "option_text"):  # a report from before it
            continue
        if report["questions"] == 0:  # classifier4 with no element-name question: nothing to score
            result["accuracy"][mode], result["correct_total"][mode] = None, [0, 0]
            result["per_answer_type"][mode], result["reports"][mode] = {}, str(path)
            continue
        block = mode_block(report, key)
        result["accuracy"][mode] = percent(block["overall"])
        result["correct_total"][mode] = [block["overall"]["correct"], block["overall"]["total"]]
        result["per_answer_type"][mode] = {t: percent(b) for t, b in block["per_answer_type"].items()}
        result["reports"][mode] = str(path)
    for stage in ("align", "instruct"):
        metrics = read_json(step_output(job, stage))
        keys = ("steps", "samples", "first_loss", "final_loss", "val_loss", "minutes")
        result[stage] = {k: metrics.get(k) for k in keys}
    result["mllm"] = str(job.path / "instruct" / "mllm")
    return result


def rescore_eval(job: GymQAJob) -> bool:
    """Re-score the eval step's predictions when its report lacks a mode the evaluator now gives for them
    (a report written before the mode existed): the answers are the model's, only their reading is new.
    The report's ``run`` block is kept; returns whether it was rewritten."""
    path = step_output(job, "eval")
    if not path.is_file():
        return False
    report = read_json(path)
    if not job.trained_form or "option_text" in report["modes"]:
        return False
    entries = read_list(Path(job.data_root) / "test.csv")
    labels = {clip_id_of(e.raw_path): e.label for e in entries}
    predictions = read_predictions(path.parent / "predictions.jsonl")
    fresh = score(
        load_questions(job.questions), predictions, load_hierarchy(job.data_root), labels, answer_form=True
    )
    fresh["run"] = report.get("run", {}) | {"rescored": "option_text added from predictions.jsonl"}
    write_json(path, fresh)
    write_text_atomic(path.with_suffix(".md"), report_to_markdown(fresh, title=f"Gym-QA: {job.path} (both)"))
    return True


def encoder_run_settings(encoder_dir: str | Path) -> dict[str, Any]:
    """What a SeFAR encoder was trained on, from its run's ``config.yaml`` (``<run>/encoder`` is the
    export): ``label_rate``, ``data_root`` and ``backbone`` — the frame-pretrained image ViT folder it
    started from, i.e. the weights of its ``framepool`` baseline (docs/DESIGN.md §Video encoders). Empty when
    unknown."""
    import yaml

    config = Path(encoder_dir).parent / "config.yaml"
    if not config.is_file():
        return {}
    cfg = yaml.safe_load(config.read_text())
    settings = {"label_rate": cfg["data"]["label_rate"], "data_root": cfg["data"]["root"]}
    init = cfg.get("init_checkpoint")
    if init and (Path(init).parent / "config.json").is_file():
        settings["backbone"] = str(Path(init).parent)
    return settings


def task_corpus(hierarchy: Any, variants: int = 3) -> list[str]:
    """Text for the tiny LLM's tokenizer and pre-training: captions and multiple-choice lines about the
    element names (``tiny_llm_corpus``) plus one Gym-QA question of every answer type per class and
    variant, answered as stage B answers (so set names, apparatus and "how many" stems get word pieces).
    Uniform over the classes; no clip and no label of any split is used."""
    from gym_qa.answer_types import ANSWER_TYPES
    from gym_qa.clips import Clip
    from gym_qa.question_generator import GeneratorConfig, GeneratorError, QuestionGenerator
    from mllm.instruction_data import format_answer
    from mllm.language_model import tiny_llm_corpus

    lines = tiny_llm_corpus(hierarchy.names)
    clips = [Clip(video=f"class{label}", label=label) for label in range(hierarchy.num_classes)]
    for answer_type in ANSWER_TYPES:
        for seed in range(variants):
            try:
                config = GeneratorConfig(types=(answer_type,), seed=seed)
                questions, _ = QuestionGenerator(hierarchy, config).generate(clips)
            except GeneratorError:  # e.g. no Qtree for attribute questions, no numeric attribute to count
                break
            lines += [f"{q.question} {format_answer(q.answer, q.answer_text)}" for q in questions]
    return lines


def build_task_tiny_llm(data_root: str | Path, out_dir: str | Path, cfg: Any = None) -> dict[str, Any]:
    """The tiny LLM (Vicuna's CPU stand-in) built on :func:`task_corpus` of a data set's hierarchy;
    ``cfg`` a :class:`~mllm.language_model.TinyLLMConfig` (default sizes when None)."""
    from mllm.language_model import build_tiny_llm

    summary = build_tiny_llm(task_corpus(load_hierarchy(data_root)), out_dir, cfg)
    write_json(Path(out_dir) / "build.json", summary)
    return summary
