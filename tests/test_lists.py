"""List files: CRLF, comments and blanks accepted; malformed lines and bad labels named by file and line."""

from pathlib import Path

import pytest

from gym_qa.lists import ListFileError, check_disjoint, read_list, write_list


def test_crlf_comments_blank_lines_and_relative_paths(tmp_path: Path):
    path = tmp_path / "sub" / "train.csv"
    path.parent.mkdir()
    path.write_bytes(b"# header\r\nvideos/a.mp4 0\r\n\r\n/abs/b.mp4   2\r\n  # indented comment\r\n")
    entries = read_list(path, num_classes=3)
    assert [e.label for e in entries] == [0, 2]
    assert entries[0].path == (tmp_path / "sub" / "videos" / "a.mp4").resolve()
    assert entries[1].path == Path("/abs/b.mp4")
    assert [e.line for e in entries] == [2, 4]


@pytest.mark.parametrize(
    "line, message",
    [
        ("justapath.mp4", "expected '<path> <label>'"),
        ("a.mp4 one", "not an integer"),
        ("a.mp4 -1", "out of range"),
        ("a.mp4 5", r"out of range \[0, 5\)"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, line: str, message: str):
    path = tmp_path / "bad.csv"
    path.write_text(f"ok.mp4 1\n{line}\n")
    with pytest.raises(ListFileError, match=rf"bad\.csv:2: .*{message}"):
        read_list(path, num_classes=5)


def test_missing_and_binary_files(tmp_path: Path):
    with pytest.raises(ListFileError, match="not found"):
        read_list(tmp_path / "none.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ListFileError, match="UTF-8"):
        read_list(tmp_path / "bin.csv")


def test_write_read_round_trip_relative(tmp_path: Path):
    clips = [(tmp_path / "videos" / f"c{i}.mp4", i % 3) for i in range(5)]
    write_list(tmp_path / "splits" / "10" / "train.csv", clips)
    text = (tmp_path / "splits" / "10" / "train.csv").read_text()
    assert text.splitlines()[0] == "../../videos/c0.mp4 0"
    back = read_list(tmp_path / "splits" / "10" / "train.csv", num_classes=3)
    assert [(e.path, e.label) for e in back] == [(p.resolve(), lab) for p, lab in clips]


def test_check_disjoint(tmp_path: Path):
    write_list(tmp_path / "val.csv", [(tmp_path / "a.mp4", 0), (tmp_path / "b.mp4", 1)])
    write_list(tmp_path / "test.csv", [(tmp_path / "b.mp4", 1)])
    with pytest.raises(ListFileError, match="both 'val' and 'test'"):
        check_disjoint(val=read_list(tmp_path / "val.csv"), test=read_list(tmp_path / "test.csv"))


def test_write_list_relative_input_is_relative_to_cwd(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_list(Path("data/ds/val.csv"), [(Path("data/ds/videos/a.mp4"), 0)])
    assert (tmp_path / "data/ds/val.csv").read_text() == "videos/a.mp4 0\n"
    assert read_list(tmp_path / "data/ds/val.csv")[0].path == tmp_path / "data/ds/videos/a.mp4"
