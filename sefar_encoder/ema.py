"""EMA teacher: the one exponential-moving-average class of the toolkit (docs/DESIGN.md §EMA teacher).

    teacher = EMATeacher(student, decay=decay_from_horizon(total_ssl_steps, fraction=0.2))
    ...
    optimizer.step()
    teacher.update(student, step)          # explicit, once per optimizer step; never inside forward

The decay is chosen through its horizon ``1/(1−d)`` in optimizer steps, as a fraction of the SSL
optimizer steps (20 %: d = 0.99 for 500 SSL steps). The official per-iteration 0.9999 (a 10k-iteration
horizon) silently changes meaning with the batch size and the run length; a fraction does not.

The teacher module stays in eval mode (no drop path, no dropout); :meth:`EMATeacher.enable_head_dropout`
turns on only the fusion-head dropout for the official K-full-passes Adaptive Regulation. Unlike the
official code, the teacher is saved and resumed (:meth:`state_dict` / :meth:`load_state_dict`).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def decay_from_horizon(total_ssl_steps: int, fraction: float = 0.2) -> float:
    """Decay ``d`` whose horizon ``1/(1−d)`` is ``fraction`` of ``total_ssl_steps`` (at least 1 step)."""
    if total_ssl_steps <= 0 or fraction <= 0:
        raise ValueError(f"need total_ssl_steps > 0 and fraction > 0, got {total_ssl_steps}, {fraction}")
    horizon = max(1.0, fraction * total_ssl_steps)
    return 1.0 - 1.0 / horizon


class EMATeacher:
    """A frozen copy of the student, updated as ``θ_t ← d θ_t + (1 − d) θ_s`` by explicit calls.

    Buffers (running statistics, counters) are copied from the student rather than averaged, as in the
    usual mean-teacher recipe; the SeFAR encoder has no persistent buffers, other students may.
    """

    def __init__(self, student: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.step = -1  # optimizer step of the last update; -1 = copied, never updated
        self.module = copy.deepcopy(student)
        self.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, student: nn.Module, step: int) -> None:
        """Average the student into the teacher; call once after each ``optimizer.step()``.

        ``step`` is the optimizer step just taken; a second update for the same (or an earlier) step
        raises, catching a doubled call (e.g. once per micro-batch under gradient accumulation).
        """
        if step <= self.step:
            raise RuntimeError(
                f"EMA already updated at step {self.step}; got step {step} (update once per step)"
            )
        t_params = list(self.module.parameters())
        s_params = list(student.parameters())
        if len(t_params) != len(s_params):
            raise ValueError("student and teacher have different parameter lists")
        for t, s in zip(t_params, s_params):
            t.lerp_(s.detach(), 1.0 - self.decay)
        for t_buf, s_buf in zip(self.module.buffers(), student.buffers()):
            t_buf.copy_(s_buf)
        self.step = step

    def enable_head_dropout(self, enabled: bool = True) -> None:
        """Eval mode everywhere, except the fusion-head dropout when ``enabled`` (official K full passes).

        Needs a :class:`~sefar_encoder.model.SeFAREncoder` teacher (``set_head_dropout``).
        """
        self.module.eval()
        if enabled:
            self.module.set_head_dropout(True)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return self.module(*args, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        """``{"module": teacher state dict (tensors), "decay": float, "step": int}``.

        Save ``"module"`` with safetensors and the two scalars as JSON (docs/DESIGN.md §Checkpoints).
        """
        return {"module": self.module.state_dict(), "decay": self.decay, "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (strict on the module's keys)."""
        self.module.load_state_dict(state["module"], strict=True)
        self.decay = float(state["decay"])
        self.step = int(state["step"])
