"""The README's quickstart figures come from docs/results/quickstart.json (scripts/readme_figures.py), which
comes from a measured quickstart run: the block cannot drift from the JSON, and the rendering is checked."""

from __future__ import annotations

import json

import pytest
from conftest import load_script

from mllm.quickstart_report import (
    README_END,
    README_START,
    readme_block,
    readme_figures,
    replace_readme_block,
)

figures_cli = load_script("readme_figures")


def summary() -> dict:
    pairs = {"pairs_direction": {"accuracy": 0.9375}, "pairs_twists": {"accuracy": None}}
    return {
        "machine": {"date": "2026-12-07T14:00:00+00:00", "cpu": "AMD EPYC", "cores": 2, "torch": "2.14.1"},
        "data": {"preset": "quickstart", "difficulty": 0.5, "classes": 12},
        "encoder": {"method": "sefar", "label_rate": 20, "test": {"mean_class": 0.927}, "pairs": pairs},
        "control": {"method": "framepool", "test": {"mean_class": 0.61},
                    "pairs": {"pairs_direction": {"accuracy": 0.5}, "pairs_twists": {"accuracy": 0.8}}},
        "gymqa": {"results": {"sefar": {"accuracy": {"likelihood": 71.0, "generate": 55.5}},
                              "frameseq": {"accuracy": {"likelihood": 52.0, "generate": 48.0}},
                              "framepool": {"accuracy": {"likelihood": 40.25}}}},
    }  # fmt: skip


def test_the_readme_block_is_the_one_the_committed_figures_give():
    assert figures_cli.main(["--check"]) == 0


def test_block_from_a_summary_and_gnu_time(tmp_path):
    log = tmp_path / "time.log"
    log.write_text(
        "\tElapsed (wall clock) time (h:mm:ss or m:ss): 12:34.80\n\tMaximum resident set size (kbytes): 1850000\n"
    )
    runs = [figures_cli.parse_gnu_time(log), {"wall_minutes": 10.0, "peak_rss_gb": 1.5}]
    assert runs[0] == {"wall_minutes": 12.58, "peak_rss_gb": 1.89}
    block = readme_block(json.loads(json.dumps(readme_figures(summary(), runs))))  # as read from the JSON
    assert block.startswith(README_START) and block.endswith(README_END)
    assert "took 10.0–12.6 min over 2 runs wall" in block and "peak RSS 1.89 GB" in block
    assert "| sefar @ 20 % | 92.7 | 93.8 | – | 71.0 | 55.5 |" in block
    assert "| order-blind control (frame pool) | 61.0 | 50.0 | 80.0 | 40.2 | – |" in block
    assert "| frame sequence (backbone frames in order, MLLM only) | – | – | – | 52.0 | 48.0 |" in block
    assert "12 synthetic SynthGym elements" in block


def test_replacing_the_block_keeps_the_rest_and_needs_the_markers(tmp_path):
    readme = f"# Title\n\n{README_START}\nold figures\n{README_END}\n\n## Next\n"
    assert replace_readme_block(readme, "NEW") == "# Title\n\nNEW\n\n## Next\n"
    with pytest.raises(ValueError, match="no quickstart figures block"):
        replace_readme_block("# Title\n", "NEW")
    bad = tmp_path / "time.log"
    bad.write_text("not GNU time\n")
    with pytest.raises(SystemExit, match="time.log"):
        figures_cli.parse_gnu_time(bad)
