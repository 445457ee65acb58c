"""Losses that learn from a teacher policy: `kickstarter` (distillation) and `action_supervised` (imitation).

The teacher is any policy artifact on the same game (`checkpoint.load_policy(uri)`, any architecture): it is
not trained and not saved in the training state (a resumed run reloads it from its URI). Its game must
match the student's: the same actions in the same order and the same observation features (in any order:
feature ids are renumbered by name) and observation window; otherwise a `LossError` says what differs.
The teacher reads each BPTT segment from its own initial state (recurrent teachers restart per segment).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Loss, LossBatch, LossError, weighted_mean

__all__ = ["ActionSupervised", "Kickstarter", "check_teacher_game"]


def check_teacher_game(teacher_info, student_info, uri: str) -> None:
    """Raise LossError naming what differs between the teacher's and the student's game."""
    problems = []
    ta, sa = list(teacher_info.action_names), list(student_info.action_names)
    if ta != sa:
        missing, extra = [a for a in sa if a not in ta], [a for a in ta if a not in sa]
        detail = f"missing {missing}" if missing else ""
        detail += (", " if detail and extra else "") + (f"extra {extra}" if extra else "")
        problems.append(f"actions differ ({detail or 'same names in another order'}; teacher {len(ta)}, "
                        f"student {len(sa)})")
    tf, sf = set(teacher_info.feature_names), set(student_info.feature_names)
    if tf != sf:
        problems.append(f"observation features differ (teacher lacks {sorted(sf - tf)}, student lacks "
                        f"{sorted(tf - sf)})")
    for key in ("obs_height", "obs_width", "num_tokens"):
        if getattr(teacher_info, key) != getattr(student_info, key):
            problems.append(f"{key} differs (teacher {getattr(teacher_info, key)}, student "
                            f"{getattr(student_info, key)})")
    if problems:
        raise LossError(f"teacher {uri}: its game does not match the student's: " + "; ".join(problems))


class TeacherLoss(Loss):
    """Holds the teacher (unregistered: not trained, not in the state dict) and runs it on a minibatch."""

    def __init__(self, env_info, name: str, teacher_uri: Optional[str] = None, teacher: Any = None) -> None:
        super().__init__(env_info, name)
        if teacher is None:
            if not teacher_uri:
                raise LossError(f"losses.{name}: needs args.teacher_uri (a policy artifact on the same game)")
            from ..checkpoint import CheckpointError, load_policy

            try:
                teacher = load_policy(teacher_uri)
            except (CheckpointError, FileNotFoundError, OSError) as e:
                raise LossError(f"losses.{name}: cannot load teacher {teacher_uri}: {e}") from None
        uri = teacher_uri or "(given policy)"
        check_teacher_game(teacher.env_info, env_info, uri)
        from models.base import FeatureRemap

        remap = FeatureRemap.between(teacher.env_info, env_info)
        object.__setattr__(self, "teacher", teacher)  # not a submodule: never trained, never saved
        object.__setattr__(self, "remap", remap)
        self.teacher_uri = teacher_uri
        for p in teacher.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def teacher_outputs(self, batch: LossBatch):
        obs, is_init = batch.take("obs"), batch.take("is_init")
        if next(self.teacher.parameters()).device != obs.device:
            self.teacher.to(obs.device)
        if self.remap is not None:
            obs = self.remap(obs)
        was_training = self.teacher.training
        self.teacher.eval()
        out = self.teacher.forward_sequence(obs, None, is_init)
        self.teacher.train(was_training)
        return out


class Kickstarter(TeacherLoss):
    """Distillation from a teacher: KL(teacher || student) of the action distributions plus
    `value_coef` x 0.5 (V_student - V_teacher)^2; the coefficient falls linearly to 0 over
    `anneal_agent_steps` agent-steps (then the loss is skipped).

    Args:
        teacher_uri: the teacher's policy artifact (`load_policy` URIs: path, run:vN, s3://...).
        value_coef: weight of the value regression.
        temperature: softmax temperature of both distributions.
        anneal_agent_steps: agent-steps over which the coefficient falls to 0 (None: constant).
    """

    needs = ("logits", "values")

    def __init__(self, env_info, name: str, teacher_uri: Optional[str] = None, value_coef: float = 1.0,
                 temperature: float = 1.0, anneal_agent_steps: Optional[int] = None, teacher: Any = None) -> None:
        super().__init__(env_info, name, teacher_uri, teacher)
        if value_coef < 0 or temperature <= 0 or (anneal_agent_steps is not None and anneal_agent_steps < 1):
            raise LossError(f"losses.{name}: value_coef must be >= 0, temperature > 0 and anneal_agent_steps >= 1 "
                            f"(got {value_coef}, {temperature}, {anneal_agent_steps})")
        self.value_coef, self.temperature, self.anneal_agent_steps = value_coef, temperature, anneal_agent_steps

    def coefficient_scale(self, agent_steps: int) -> float:
        if self.anneal_agent_steps is None:
            return 1.0
        return max(0.0, 1.0 - agent_steps / self.anneal_agent_steps)

    def forward(self, batch: LossBatch) -> tuple[Tensor, dict[str, Tensor]]:
        t = self.teacher_outputs(batch)
        student = torch.log_softmax(batch.outputs["logits"] / self.temperature, dim=-1)
        teacher = torch.log_softmax(t["logits"] / self.temperature, dim=-1)
        kl = weighted_mean((teacher.exp() * (teacher - student)).sum(-1), batch.weights)
        value = 0.5 * weighted_mean((batch.outputs["values"] - t["values"]) ** 2, batch.weights)
        return kl + self.value_coef * value, {"kl": kl.detach(), "value_loss": value.detach()}


class ActionSupervised(TeacherLoss):
    """Imitation: cross-entropy of the student's logits against the teacher's greedy action on the states
    the student visits (the teacher labels every step of the rollout, DAgger-style).

    Args:
        teacher_uri: the teacher's policy artifact.
    """

    needs = ("logits",)

    def forward(self, batch: LossBatch) -> tuple[Tensor, dict[str, Tensor]]:
        target = self.teacher_outputs(batch)["logits"].argmax(-1)
        logits = batch.outputs["logits"]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                             reduction="none").view(target.shape)
        loss = weighted_mean(ce, batch.weights)
        with torch.no_grad():
            acc = (logits.argmax(-1) == target).float().mean()
        return loss, {"cross_entropy": loss.detach(), "accuracy": acc}
