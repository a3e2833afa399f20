"""``scripts/eval_out_of_domain.py`` end to end on tiny data: SynthGym clips vs generated non-gymnastics
clips, AUROC per score and per kind, the score chosen on the selection pair, the calibrated flag rates."""

from __future__ import annotations

import json
import shutil

from conftest import load_script

pytest_plugins = ["demo_fixtures"]  # fitted_encoder, synthgym_clips
eval_cli = load_script("eval_out_of_domain")
make_cli = load_script("make_non_gymnastics")
predict_cli = load_script("predict")


def test_eval_reports_auroc_per_score_and_kind(fitted_encoder, synthgym_clips, tmp_path):
    nongym = tmp_path / "nongym"
    assert make_cli.main(["--out", str(nongym), "--count", "4", "--seed", "1"]) == 0
    encoder = shutil.copytree(fitted_encoder, tmp_path / "encoder")
    clips = str(synthgym_clips["list"])
    calibrate = ["--encoder", str(encoder), "--inputs", clips, "--calibrate", "--reference", clips, "--quiet"]
    assert predict_cli.main(calibrate) == 0
    out = tmp_path / "ood.json"
    lists = ["--in-domain", clips, "--out-of-domain", str(nongym / "clips.csv")]
    select = ["--select-in", clips, "--select-out", str(nongym / "clips.csv")]
    assert eval_cli.main(["--encoder", str(encoder), *lists, *select, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    measured = result["measured"]
    assert measured["clips"] == {"in_domain": 12, "out_of_domain": 4}
    scores = {"max_softmax", "energy", "dropout_std", "regulation_weight", "feature_distance"}
    assert set(measured["auroc"]) == scores and all(0.0 <= v <= 1.0 for v in measured["auroc"].values())
    assert set(measured["auroc_by_kind"]) == {"empty", "ball", "shapes", "standing"}
    lo, hi = measured["auroc_95_interval"]["energy"]
    assert lo <= hi
    # the selection pair is the measured pair here: the chosen score is the best measured one
    assert result["chosen_auroc"] == max(measured["auroc"].values())
    assert result["target_met"] == (result["chosen_auroc"] >= 0.9)
    rates = result["flag"]["rates"]["feature_distance"]
    assert rates["in_domain_flagged"] == 0.0  # keep 0.95 of 12: the largest val distance is the threshold
    assert result["in_domain_top1"] == 1.0 and "eval_out_of_domain.py" in result["command"]
    # --entry: one file, an entry per encoder; refuses to turn a single result into entries
    entries = tmp_path / "entries.json"
    args = ["--encoder", str(encoder), *lists, "--out", str(entries)]
    assert eval_cli.main([*args, "--entry", "a"]) == 0 and eval_cli.main([*args, "--entry", "b"]) == 0
    assert set(json.loads(entries.read_text())) == {"a", "b"}
    assert eval_cli.main(["--encoder", str(encoder), *lists, "--out", str(out), "--entry", "a"]) == 1
