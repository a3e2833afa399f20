"""EMA teacher: explicit updates only, decay math, head-dropout-only mode, save/resume."""

import pytest
import torch

from sefar_encoder.ema import EMATeacher, decay_from_horizon
from sefar_encoder.model import ModelConfig, SeFAREncoder


def student() -> SeFAREncoder:
    torch.manual_seed(0)
    cfg = ModelConfig(
        img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=3, views=(2, 2)
    )
    return SeFAREncoder(cfg)


def params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_decay_from_horizon():
    assert decay_from_horizon(500, 0.2) == pytest.approx(0.99)
    assert decay_from_horizon(50_000, 0.2) == pytest.approx(0.9999)
    assert 1 / (1 - decay_from_horizon(1234, 0.3)) == pytest.approx(0.3 * 1234)
    assert decay_from_horizon(3, 0.2) == 0.0  # horizon clipped to one step: the teacher copies the student
    with pytest.raises(ValueError):
        decay_from_horizon(0)


def test_forward_and_training_do_not_change_the_teacher_until_update():
    model = student()
    ema = EMATeacher(model, decay=0.9)
    before = params(ema.module)
    video = torch.randn(2, 3, 4, 16, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(2):  # student trains, teacher is used, nobody calls update
        model(video).logits.sum().backward()
        opt.step()
        opt.zero_grad()
        ema(video)
        ema.module(video)
    for k, v in params(ema.module).items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(
        params(model)["fusion_head.classifier.weight"], before["fusion_head.classifier.weight"]
    )


def test_update_is_the_exponential_average():
    model = student()
    ema = EMATeacher(model, decay=0.9)
    teacher_before, d = params(ema.module), 0.9
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    ema.update(model, step=1)
    student_now = params(model)
    for k, v in params(ema.module).items():
        torch.testing.assert_close(v, d * teacher_before[k] + (1 - d) * student_now[k])
    with pytest.raises(RuntimeError, match="once per step"):
        ema.update(model, step=1)
    ema.update(model, step=2)
    assert ema.step == 2


def test_teacher_is_frozen_and_in_eval_mode_except_head_dropout():
    model = student().train()
    ema = EMATeacher(model, decay=0.99)
    assert not ema.module.training and all(not p.requires_grad for p in ema.module.parameters())
    ema.enable_head_dropout()
    in_train = {name for name, m in ema.module.named_modules() if m.training}
    assert in_train == {"fusion_head.dropout"}
    ema.enable_head_dropout(False)
    assert not any(m.training for m in ema.module.modules())


def test_state_dict_round_trip_resumes_the_teacher():
    model = student()
    ema = EMATeacher(model, decay=0.95)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    ema.update(model, step=7)
    state = ema.state_dict()
    assert set(state) == {"module", "decay", "step"}
    resumed = EMATeacher(student(), decay=0.5)
    resumed.load_state_dict(state)
    assert resumed.decay == 0.95 and resumed.step == 7
    for k, v in params(resumed.module).items():
        assert torch.equal(v, state["module"][k])
    with pytest.raises(RuntimeError):
        resumed.update(model, step=7)  # the resumed step counter still guards against double updates
