"""scripts/bench_ssl.py aggregation: the table from finished runs' metrics.json, and entries of jobs whose run
folders are gone kept from the previous JSON (marked), mixed with new runs of the same job only when
--add-seeds asks for it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_script

bench = load_script("bench_ssl")


def write_run(
    runs: Path, job: str, seed: int, mean_class: float, minutes: float = 2.0, **ssl: float | None
) -> None:
    run = runs / job / f"seed{seed}"
    run.mkdir(parents=True)
    test = {"mean_class": mean_class, "top1": mean_class, "pairs_direction": {"accuracy": 0.5}}
    (run / "metrics.json").write_text(json.dumps({"test": test, "minutes": minutes, **ssl}))


def aggregate(tmp_path: Path, *extra: str) -> dict:
    bench.main(["--aggregate-only", "--runs", str(tmp_path / "runs"), "--json-out", str(tmp_path / "t.json"),
                "--markdown-out", str(tmp_path / "t.md"), *extra])  # fmt: skip
    return json.loads((tmp_path / "t.json").read_text())


def test_table_and_paired_steps_from_finished_runs(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed, (a, b) in enumerate([(0.20, 0.25), (0.30, 0.32)]):
        write_run(runs, "ablation-none@10", seed, a)
        write_run(runs, "ablation-dual@10", seed, b)
    (runs / "sefar@10" / "seed0").mkdir(parents=True)  # unfinished: no metrics.json
    table = aggregate(tmp_path)
    assert table["ablation-none@10"]["runs"] == pytest.approx([20.0, 30.0])
    assert table["ablation-none@10"]["mean"] == pytest.approx(25.0)
    assert table["ablation-none@10"]["std"] == pytest.approx(7.0711, abs=1e-3)
    assert table["ablation-none@10"]["pairs_direction"] == pytest.approx(50.0)
    assert "sefar@10" not in table
    step = table["ablation_steps"]["ablation-dual@10 - ablation-none@10"]
    assert step["mean"] == pytest.approx(3.5) and step["seeds"] == [0, 1]
    assert step["std"] == pytest.approx(2.1213, abs=1e-3)
    assert "| ablation-dual@10 | 28.5 ± 4.9 | 2 |" in (tmp_path / "t.md").read_text()


def test_jobs_without_runs_keep_their_previous_entry(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_run(runs, "ablation-none@10", 0, 0.20)
    write_run(runs, "ablation-none@10", 1, 0.30)
    first = aggregate(tmp_path)
    # the run folders of that job are gone; another job's runs are new
    for seed in (0, 1):
        (runs / "ablation-none@10" / f"seed{seed}" / "metrics.json").unlink()
    write_run(runs, "ablation-dual@10", 1, 0.40)
    second = aggregate(tmp_path)
    kept = second["ablation-none@10"]
    assert kept.pop("kept") is True
    assert kept == first["ablation-none@10"]
    assert "kept" not in second["ablation-dual@10"]
    # the paired step uses the kept per-seed values, on the seeds both rows have
    step = second["ablation_steps"]["ablation-dual@10 - ablation-none@10"]
    assert step["seeds"] == [1] and step["mean"] == pytest.approx(10.0)
    md = (tmp_path / "t.md").read_text()
    assert "| ablation-none@10 † |" in md and "† kept" in md
    # a new run of a kept job replaces the whole entry: seeds of one row never mix sources
    write_run(runs, "ablation-none@10", 2, 0.10)
    third = aggregate(tmp_path)
    assert (
        third["ablation-none@10"]["runs"] == pytest.approx([10.0]) and "kept" not in third["ablation-none@10"]
    )
    # --fresh tabulates only what is under --runs
    (runs / "ablation-none@10" / "seed2" / "metrics.json").unlink()
    assert "ablation-none@10" not in aggregate(tmp_path, "--fresh")


def test_broken_previous_json_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "t.json").write_text('{"sefar@10": \n')
    with pytest.raises(SystemExit, match=r"t\.json: line 2: not valid JSON"):
        aggregate(tmp_path)


def test_ssl_statistics_are_seed_means_in_percent(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_run(runs, "freematch@5", 0, 0.20, unlabeled_used=0.50, pseudo_acc=0.25)
    write_run(runs, "freematch@5", 1, 0.30, unlabeled_used=0.70, pseudo_acc=0.35)
    write_run(runs, "supervised@5", 0, 0.25, unlabeled_used=None, pseudo_acc=None)  # no unlabeled clips
    write_run(runs, "fixmatch@10", 0, 0.25)  # a run from before the statistics existed
    table = aggregate(tmp_path)
    assert table["freematch@5"]["unlabeled_used"] == pytest.approx(60.0)
    assert table["freematch@5"]["pseudo_acc"] == pytest.approx(30.0)
    for job in ("supervised@5", "fixmatch@10"):
        assert "unlabeled_used" not in table[job] and "pseudo_acc" not in table[job]
    md = (tmp_path / "t.md").read_text().splitlines()
    assert "| unlabeled used (%) | pseudo-label acc. (%) | min/run |" in md[0]
    assert "| freematch@5 | 25.0 ± 7.1 | 2 | 25.0 | 50.0 | – | 60.0 | 30.0 | 2.0 |" in md
    assert "| supervised@5 | 25.0 ± 0.0 | 1 | 25.0 | 50.0 | – | – | – | 2.0 |" in md


def test_label_rate_5_jobs_and_freematch_are_in_the_job_list():
    for job, rate in {
        "supervised@5": 5,
        "fixmatch@5": 5,
        "sefar@5": 5,
        "freematch@10": 10,
        "freematch@5": 5,
    }.items():
        assert bench.JOBS[job][0] == rate
        assert f"method.name={job.split('@')[0]}" in bench.JOBS[job][1]


def test_every_row_trains_the_dual_level_encoder_but_the_order_blind_control_and_first_ablation():
    from sefar_encoder.methods import resolve_method
    from sefar_encoder.runtime.config import load_config
    from sefar_encoder.training_config import EncoderTrainConfig

    config = Path(bench.REPO) / "configs" / "encoder" / "synthgym_bench.yaml"
    single = set()
    for job, (_, overrides) in bench.JOBS.items():
        cfg = load_config(EncoderTrainConfig, config, overrides)
        if not resolve_method(cfg.method).dual_level:
            single.add(job)
    assert single == {"framepool@100", "framepool@10", "ablation-none@10"}


def test_add_seeds_extends_the_previous_entry_exactly(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_run(runs, "sefar@10", 0, 0.80, minutes=4.0, unlabeled_used=1.0, pseudo_acc=0.90)
    write_run(runs, "sefar@10", 1, 0.90, minutes=6.0, unlabeled_used=1.0, pseudo_acc=0.70)
    first = json.loads(json.dumps(aggregate(tmp_path)))
    for seed in (0, 1):  # the run folders are gone (another machine); seed 2 is run there
        (runs / "sefar@10" / f"seed{seed}" / "metrics.json").unlink()
    write_run(runs, "sefar@10", 2, 0.70, minutes=8.0, unlabeled_used=0.4, pseudo_acc=0.60)
    assert aggregate(tmp_path, "--aggregate-only")["sefar@10"]["seeds"] == [2]  # by default: replaced
    (tmp_path / "t.json").write_text(json.dumps(first))
    added = aggregate(tmp_path, "--add-seeds")["sefar@10"]
    # the same figures as if all three runs had been under --runs
    assert added["seeds"] == [0, 1, 2] and added["runs"] == pytest.approx([80.0, 90.0, 70.0])
    assert added["mean"] == pytest.approx(80.0) and added["std"] == pytest.approx(10.0)
    assert added["minutes"] == pytest.approx(6.0)
    assert added["unlabeled_used"] == pytest.approx(80.0) and added["pseudo_acc"] == pytest.approx(220 / 3)
    assert added["pairs_direction"] == pytest.approx(50.0) and added["seeds_from_previous"] == [0, 1]
    assert "| sefar@10 ‡ | 80.0 ± 10.0 | 3 |" in (tmp_path / "t.md").read_text()


def test_add_seeds_again_and_again_keeps_every_seed(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        write_run(runs, "sefar@10", seed, 0.8 + seed / 10, minutes=2.0 + seed)
    aggregate(tmp_path)
    for seed in (0, 1):
        (runs / "sefar@10" / f"seed{seed}" / "metrics.json").unlink()
    write_run(runs, "sefar@10", 2, 0.7, minutes=6.0)
    first = aggregate(tmp_path, "--add-seeds")["sefar@10"]
    write_run(runs, "sefar@10", 3, 0.6, minutes=4.0)  # another session adds seed 3: seed 2 is run again
    second = aggregate(tmp_path, "--add-seeds")["sefar@10"]
    assert first["seeds"] == [0, 1, 2] and second["seeds"] == [0, 1, 2, 3]
    assert second["runs"] == pytest.approx([80.0, 90.0, 70.0, 60.0]) and second["minutes"] == pytest.approx(
        3.75
    )
    assert aggregate(tmp_path, "--add-seeds")["sefar@10"] == second  # idempotent
    (runs / "sefar@10" / "seed3" / "metrics.json").unlink()
    assert aggregate(tmp_path)["sefar@10"]["seeds"] == [2]  # without --add-seeds: the runs here alone
    assert "seeds [0, 1, 3] of the existing entry have no run here" in capsys.readouterr().err


def test_add_seeds_refuses_to_split_a_group_of_several_seeds(tmp_path, capsys):
    """An entry written before groups were kept is one group of means: it cannot lose one of its seeds."""
    legacy = {"mean": 80.0, "std": 0.0, "runs": [80.0, 80.0], "seeds": [0, 1], "minutes": 2.0, "top1": 80.0}
    (tmp_path / "t.json").write_text(json.dumps({"sefar@10": legacy}))
    write_run(tmp_path / "runs", "sefar@10", 1, 0.7)
    write_run(tmp_path / "runs", "sefar@10", 2, 0.7)
    with pytest.raises(SystemExit, match="cannot split"):
        aggregate(tmp_path, "--add-seeds")
    with pytest.raises(SystemExit):
        aggregate(tmp_path, "--add-seeds", "--fresh")
