"""FineGym ingestion: element lists + a clip folder → list file of present clips and a missing-clip report;
the FineGym metadata packaged with gym_qa and the scripts that default to it."""

import fnmatch
import tomllib
from pathlib import Path

import pytest
from conftest import FINEGYM_DIR, REPO, load_script

from gym_qa.clips import clip_id_of, index_clips
from gym_qa.finegym import ingest, metadata_path, parse_clip_id, read_element_list, write_ingest_outputs
from gym_qa.hierarchy import load_hierarchy
from gym_qa.hierarchy_files import read_categories
from gym_qa.lists import ListFileError, read_list
from gym_qa.questions import load_questions

IDS = [
    "0LtLS9wROrk_E_002407_002435_A_0003_0005",
    "0LtLS9wROrk_E_002407_002435_A_0006_0008",
    "a-b_c_E_1_2_A_3_4",
    "synth_000017",
]


def test_parse_clip_id():
    assert parse_clip_id(IDS[0]) == ("0LtLS9wROrk", (2407, 2435), (3, 5))
    assert parse_clip_id(IDS[2]) == ("a-b_c", (1, 2), (3, 4))  # YouTube ids may hold '_' and '-'
    assert parse_clip_id("synth_000017") is None
    assert clip_id_of("x/clip.MP4") == "clip" and clip_id_of(IDS[0]) == IDS[0]


def test_clip_ids_keep_dots_that_are_not_video_extensions(tmp_path: Path):
    assert clip_id_of("take.2") == "take.2" and clip_id_of("videos/take.2.mp4") == "take.2"
    (tmp_path / "take.2.mp4").write_bytes(b"")
    assert index_clips(tmp_path) == {"take.2": tmp_path / "take.2.mp4"}


def test_read_gym99_val_element_list():
    clips = read_element_list(FINEGYM_DIR / "gym99_val_element.txt", num_classes=99)
    assert len(clips) == 8521
    assert (clips[0].clip_id, clips[0].label, clips[0].line, clips[0].video_id) == (
        IDS[0],
        78,
        1,
        "0LtLS9wROrk",
    )


def test_element_list_errors(tmp_path: Path):
    path = tmp_path / "elements.txt"
    path.write_text(f"{IDS[0]} 1\n{IDS[1]} 2\n{IDS[0]} 3\n")
    with pytest.raises(ListFileError, match=r"elements\.txt:3: clip .* already listed at line 1"):
        read_element_list(path)
    path.write_text(f"{IDS[0]} 1\n{IDS[1]}\n")
    with pytest.raises(ListFileError, match=r"elements\.txt:2: expected"):
        read_element_list(path)
    path.write_text(f"{IDS[0]} 100\n")
    with pytest.raises(ListFileError, match=r"elements\.txt:1: label 100 out of range"):
        read_element_list(path, num_classes=99)


def make_folder(tmp_path: Path) -> tuple[Path, Path]:
    elements = tmp_path / "elements.txt"
    elements.write_text("# FineGym-style\r\n" + "".join(f"{clip} {i}\r\n" for i, clip in enumerate(IDS)))
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in (f"{IDS[0]}.mkv", f"{IDS[0]}.mp4", f"{IDS[3]}.webm", "notes.txt", f"{IDS[2]}.txt"):
        (clips / name).write_bytes(b"")  # ingestion never decodes: names are enough
    return elements, clips


def test_ingest_lists_present_and_reports_missing(tmp_path: Path):
    elements, clips = make_folder(tmp_path)
    assert index_clips(clips)[IDS[0]].suffix == ".mp4"  # .mp4 preferred over .mkv, whatever the listing order
    result = ingest(elements, clips)
    assert result.total == 4 and [c.clip_id for c in result.missing] == [IDS[1], IDS[2]]
    write_ingest_outputs(result, tmp_path / "out" / "list.csv", tmp_path / "out" / "missing.txt")
    entries = read_list(tmp_path / "out" / "list.csv")
    assert [(e.path.name, e.label) for e in entries] == [(f"{IDS[0]}.mp4", 0), (f"{IDS[3]}.webm", 3)]
    assert entries[0].path == (clips / f"{IDS[0]}.mp4").resolve()
    missing = read_element_list(tmp_path / "out" / "missing.txt")  # the report is itself an element list
    assert [(c.clip_id, c.label) for c in missing] == [(IDS[1], 1), (IDS[2], 2)]
    assert (tmp_path / "out" / "missing.txt").read_text().startswith("# 2 of 4 clips missing")


def test_ingest_script(tmp_path: Path, capsys):
    elements, clips = make_folder(tmp_path)
    main = load_script("ingest_finegym").main
    out = tmp_path / "list.csv"
    assert main(["--elements", str(elements), "--clips", str(clips), "--out", str(out)]) == 0
    assert "2 of 4 clips found" in capsys.readouterr().out
    assert (tmp_path / "list.csv.missing.txt").is_file()
    assert (
        main(["--elements", str(elements), "--clips", str(clips), "--out", str(out), "--fail-on-missing"])
        == 1
    )
    assert main(["--elements", str(elements), "--clips", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "clip folder not found" in capsys.readouterr().err
    elements.write_text(f"{IDS[0]} x\n")
    assert main(["--elements", str(elements), "--clips", str(clips), "--out", str(out)]) == 2
    assert "elements.txt:1" in capsys.readouterr().err


# ------------------------------------------------------------------- FineGym metadata packaged with gym_qa
def test_metadata_is_packaged_and_declared_as_package_data():
    files = sorted(p for p in FINEGYM_DIR.iterdir() if p.name != "README.md")
    assert FINEGYM_DIR.parts[-3:] == ("gym_qa", "data", "finegym") and len(files) == 10
    assert all(metadata_path(p.name) == p for p in files)
    # a non-editable install gets what [tool.setuptools.package-data] matches (paths relative to gym_qa/)
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    globs = setuptools["package-data"]["gym_qa"]
    in_repo = sorted((REPO / "gym_qa" / "data" / "finegym").iterdir())
    assert all(any(fnmatch.fnmatch(f"data/finegym/{p.name}", g) for g in globs) for p in in_repo)
    with pytest.raises(FileNotFoundError, match="not a packaged FineGym metadata file.*gym99_categories.txt"):
        metadata_path("gym100_categories.txt")


def test_make_gymqa_defaults_to_packaged_gym99_and_its_qtree(tmp_path: Path, capsys):
    elements = (FINEGYM_DIR / "gym99_val_element.txt").read_text().splitlines()[:20]
    (tmp_path / "val20.txt").write_text("\n".join(elements) + "\n")
    main = load_script("make_gymqa").main
    out = tmp_path / "q.json"
    assert main(["--list", str(tmp_path / "val20.txt"), "--out", str(out), "--types", "what,attribute"]) == 0
    capsys.readouterr()
    questions = load_questions(out)
    gym99 = load_hierarchy(FINEGYM_DIR / "gym99_categories.txt")
    whats = [q for q in questions if q.answer_type == "what"]
    assert len(whats) == 20 and all(set(q.options) <= set(gym99.names) for q in whats)
    assert any(q.answer_type == "attribute" for q in questions)  # the Qtree came with the default


def test_make_tiny_llm_default_corpus_uses_packaged_categories(tmp_path: Path):
    script = load_script("make_tiny_llm")
    texts = script.read_corpus(script.parse_args(["--out", str(tmp_path)]), 0)
    for name in ("gym99_categories.txt", "gym288_categories.txt"):
        element = read_categories(metadata_path(name))[0]
        assert f"The athlete performs {element.name}." in texts
