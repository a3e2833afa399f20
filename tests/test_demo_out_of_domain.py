"""The demo's uncertainty (issue 18, point 11): the status line gives the out-of-domain score, warns of a
clip the calibration flags and of a low-confidence top-1, and says when the check is uncalibrated; the
header says whether the check exists. Handler-level, no server."""

from __future__ import annotations

from mllm.demo_app import capabilities
from mllm.demo_handlers import LOW_CONFIDENCE, DemoHandlers, uncertainty_notes
from mllm.demo_uploads import DemoLimits
from sefar_encoder.out_of_domain import SCORES, OutOfDomainCalibration, Uncertainty
from sefar_encoder.prediction import ClipPrediction, ElementScore, Predictor

pytest_plugins = ["demo_fixtures"]  # fitted_encoder, synthgym_clips

FLAG = "Looks out of domain"
LOW = "Low confidence"


def calibration(threshold: float) -> OutOfDomainCalibration:
    return OutOfDomainCalibration(
        score="energy", keep=0.95, thresholds=dict.fromkeys(SCORES, threshold), num_clips=48, inputs="val.csv"
    )


def prediction(probability: float, uncertainty: Uncertainty | None) -> ClipPrediction:
    top = [ElementScore(3, "salto forward tucked", probability), ElementScore(1, "other", 1 - probability)]
    return ClipPrediction("ball.mp4", top, 40, [[0, 1]], uncertainty=uncertainty)


def test_notes_warn_of_a_flagged_clip_and_of_low_confidence():
    scores = {"energy": -1.5, "max_softmax": 0.81, "dropout_std": 0.02, "regulation_weight": 0.9}
    flagged = uncertainty_notes(prediction(0.19, Uncertainty(scores, "energy", -2.0)), "calibrated")
    assert flagged[0] == "Uncertainty: energy score -1.5, flagged above -2: out of domain."
    assert FLAG in flagged[1] and LOW in flagged[2] and "19 %" in flagged[2]
    kept = uncertainty_notes(prediction(0.9, Uncertainty(scores, "energy", -1.0)), "calibrated")
    assert kept == ["Uncertainty: energy score -1.5, flagged above -1: in domain."]
    status = "uncalibrated: the encoder has no out_of_domain.json"
    bare = uncertainty_notes(prediction(LOW_CONFIDENCE, Uncertainty(scores, "energy", None, status)), status)
    assert bare == [f"Uncertainty: energy score -1.5, no out-of-domain check ({status})."]  # 50 %: not low


def test_analyze_warns_of_a_flagged_clip(fitted_encoder, synthgym_clips):
    clip = str(synthgym_clips["clips"][0][0])
    flagging = DemoHandlers(Predictor(fitted_encoder, calibration=calibration(-1e9)), None, [], DemoLimits())
    _, top5, _, status = flagging.analyze(clip)
    assert top5 and FLAG in status and "out of domain." in status
    keeping = DemoHandlers(Predictor(fitted_encoder, calibration=calibration(1e9)), None, [], DemoLimits())
    _, _, _, status = keeping.analyze(clip)
    assert FLAG not in status and LOW not in status and ": in domain." in status  # fitted: p(top-1) = 0.83
    _, _, _, status = DemoHandlers(Predictor(fitted_encoder), None, [], DemoLimits()).analyze(clip)
    assert "no out-of-domain check (uncalibrated" in status and FLAG not in status


def test_header_says_whether_out_of_domain_clips_are_flagged(fitted_encoder):
    assert "flagged" in capabilities(Predictor(fitted_encoder, calibration=calibration(0.0)), chat=False)
    assert "not calibrated" in capabilities(Predictor(fitted_encoder), chat=False)
