"""Losses that learn from a teacher policy, `kickstarter` (distillation) and `action_supervised` (imitation),
and from recorded episodes (`action_supervised` with `replays`).

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


def check_teacher_game(teacher_info, student_info, uri: str, what: str = "teacher") -> None:
    """Raise LossError naming what differs between the teacher's (or a replay's) game and the student's."""
    problems = []
    ta, sa = list(teacher_info.action_names), list(student_info.action_names)
    if ta != sa:
        missing, extra = [a for a in sa if a not in ta], [a for a in ta if a not in sa]
        detail = f"missing {missing}" if missing else ""
        detail += (", " if detail and extra else "") + (f"extra {extra}" if extra else "")
        problems.append(f"actions differ ({detail or 'same names in another order'}; {what} {len(ta)}, "
                        f"student {len(sa)})")
    tf, sf = set(teacher_info.feature_names), set(student_info.feature_names)
    if tf != sf:
        problems.append(f"observation features differ ({what} lacks {sorted(sf - tf)}, student lacks "
                        f"{sorted(tf - sf)})")
    for key in ("obs_height", "obs_width", "num_tokens"):
        if getattr(teacher_info, key) != getattr(student_info, key):
            problems.append(f"{key} differs ({what} {getattr(teacher_info, key)}, student "
                            f"{getattr(student_info, key)})")
    if problems:
        raise LossError(f"{what} {uri}: its game does not match the student's: " + "; ".join(problems))


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
    """Imitation: cross-entropy of the student's logits against demonstrated actions, from one of
    - a teacher (`teacher_uri`): its greedy action at every state the student visits (DAgger-style), or
    - recorded episodes (`replays`): our replay files, played again through the engine to recover what each
      agent observed (`envs.replay.demonstration`). Each minibatch draws as many demonstration segments as
      it has rollout segments (uniformly, with replacement; each from the policy's initial state); steps
      where the agent was frozen are left out.

    Args:
        teacher_uri: the teacher's policy artifact.
        replays: a replay file (`*.json.z`), a folder of them, or a glob; any fsspec URL.
        agents: with `replays`, the agent ids to imitate (default: in a replay of `play`, the agent the person
            played at each step (`metadata.controlled_agents`); otherwise every agent).
    """

    needs = ("logits",)

    def __init__(self, env_info, name: str, teacher_uri: Optional[str] = None, replays: Optional[str] = None,
                 agents: Optional[list[int]] = None, teacher: Any = None) -> None:
        if bool(replays) == bool(teacher_uri or teacher is not None):
            raise LossError(f"losses.{name}: needs exactly one of args.teacher_uri (imitate a policy) and "
                            f"args.replays (imitate recorded episodes)")
        if teacher_uri or teacher is not None:
            if agents is not None:
                raise LossError(f"losses.{name}: args.agents selects agents of replays; it needs args.replays")
            super().__init__(env_info, name, teacher_uri, teacher)
            self.demos = None
            return
        Loss.__init__(self, env_info, name)
        self.replays, self.demos = replays, load_demonstrations(replays, env_info, agents, name)
        self._segments: Optional[tuple[Tensor, Tensor, Tensor]] = None
        self._draws = 0

    def prepare(self, update) -> None:
        self._draws = 0

    def forward(self, batch: LossBatch) -> tuple[Tensor, dict[str, Tensor]]:
        if self.demos is not None:
            return self._replay_forward(batch)
        target = self.teacher_outputs(batch)["logits"].argmax(-1)
        return _cross_entropy(batch.outputs["logits"], target, None, batch.weights)

    def _replay_forward(self, batch: LossBatch) -> tuple[Tensor, dict[str, Tensor]]:
        bptt = batch.take("is_init").shape[1]
        if self._segments is None or self._segments[0].shape[1] != bptt:
            self._segments = self.demos.segments(bptt)
        obs, actions, mask = self._segments
        # The draw depends only on the training progress, so a resumed run draws the same segments.
        gen = torch.Generator().manual_seed(batch.agent_steps * 1_000_003 + self._draws)
        self._draws += 1
        pick = torch.randint(len(obs), (batch.index.numel(),), generator=gen)
        device = batch.outputs["logits"].device
        obs, actions, mask = obs[pick].to(device), actions[pick].to(device), mask[pick].to(device)
        is_init = torch.zeros(mask.shape, dtype=torch.bool, device=device)
        is_init[:, 0] = True
        logits = batch.update.policy.forward_sequence(obs, None, is_init)["logits"]
        return _cross_entropy(logits, actions, mask, None)


def _cross_entropy(logits: Tensor, target: Tensor, mask: Optional[Tensor],
                   weights: Optional[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """Mean cross-entropy of `logits` `[B, T, A]` against `target` `[B, T]` (over `mask`'s steps, if given)."""
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1),
                         reduction="none").view(target.shape)
    with torch.no_grad():
        hit = (logits.argmax(-1) == target).float()
    if mask is None:
        loss = weighted_mean(ce, weights)
        acc = hit.mean()
    else:
        m = mask.float()
        loss = (ce * m).sum() / m.sum().clamp(min=1)
        acc = (hit * m).sum() / m.sum().clamp(min=1)
    return loss, {"cross_entropy": loss.detach(), "accuracy": acc}


class Demonstrations:
    """Recorded episodes, played again (`envs.replay.demonstration`), as one sequence per imitated agent."""

    def __init__(self, obs: list[Tensor], actions: list[Tensor], acted: list[Tensor]) -> None:
        self.obs, self.actions, self.acted = obs, actions, acted  # per sequence: [T, tokens, 3], [T], [T]

    @property
    def steps(self) -> int:
        return sum(int(a.sum()) for a in self.acted)

    def segments(self, bptt: int) -> tuple[Tensor, Tensor, Tensor]:
        """Every sequence cut into segments of `bptt` steps (the last one padded and masked):
        obs `[S, bptt, tokens, 3]`, actions `[S, bptt]`, mask `[S, bptt]` (the steps to learn from)."""
        obs, actions, mask = [], [], []
        for o, a, m in zip(self.obs, self.actions, self.acted):
            pad = -len(a) % bptt
            obs.append(F.pad(o, (0, 0, 0, 0, 0, pad), value=0xFF).view(-1, bptt, *o.shape[1:]))
            actions.append(F.pad(a, (0, pad)).view(-1, bptt))
            mask.append(F.pad(m, (0, pad), value=False).view(-1, bptt))
        return torch.cat(obs), torch.cat(actions), torch.cat(mask)


def replay_files(replays: str) -> list[str]:
    """The replay files named by `replays`: one file, a folder of `*.json.z`, or a glob (any fsspec URL)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(replays)
    if any(c in path for c in "*?["):
        found = fs.glob(path)
    elif fs.isdir(path):
        found = fs.glob(path.rstrip("/") + "/**/*.json.z")
    elif fs.exists(path):
        found = [path]
    else:
        raise FileNotFoundError(f"{replays}: no such replay file or folder")
    return sorted(fs.unstrip_protocol(p) if "://" in replays else p for p in found)


def _person_per_step(metadata: dict, steps: int):
    """The agent a person played at each step of a `play` replay (int array `[steps]`), or None when the
    replay names no person: `controlled_agents` ([[step, agent], ...], the agent from that step on) or, in
    replays that only name the agent at saving time, `controlled_agent` for every step."""
    import numpy as np

    from envs.replay import values_per_step

    changes = metadata.get("controlled_agents")
    if not changes and isinstance(metadata.get("controlled_agent"), int):
        changes = [[0, metadata["controlled_agent"]]]
    if not changes:
        return None
    return np.array(values_per_step(sorted(changes), steps), dtype=np.int64)


def load_demonstrations(replays: str, env_info, agents: Optional[list[int]], name: str) -> Demonstrations:
    """Read and play again every replay named by `replays`, checked against the student's game."""
    from envs.info import EnvInfo
    from envs.replay import ReplayError, demonstration, load
    from models.base import FeatureRemap

    try:
        files = replay_files(replays)
    except (FileNotFoundError, OSError) as e:
        raise LossError(f"losses.{name}: args.replays: {e}") from None
    if not files:
        raise LossError(f"losses.{name}: args.replays: no replay (*.json.z) found at {replays}")
    obs, actions, acted = [], [], []
    for path in files:
        try:
            replay = load(path)
            demo = demonstration(replay, path)
        except ReplayError as e:
            raise LossError(f"losses.{name}: args.replays: {e}") from None
        info = EnvInfo.from_config(demo.config)
        check_teacher_game(info, env_info, path, what="replay")
        steps, num_agents = demo.actions.shape
        chosen, person = agents, None
        if chosen is None:
            person = _person_per_step(replay.get("metadata") or {}, steps)
            chosen = sorted(set(person.tolist())) if person is not None else list(range(num_agents))
        bad = [a for a in chosen if not 0 <= a < num_agents]
        if bad:
            raise LossError(f"losses.{name}: args.agents {bad}: {path} has agents 0..{num_agents - 1}")
        remap = FeatureRemap.between(env_info, info)
        episode = torch.from_numpy(demo.obs)
        if remap is not None:
            episode = remap(episode)
        for a in chosen:
            obs.append(episode[:, a])
            actions.append(torch.from_numpy(demo.actions[:, a]))
            acted.append(torch.from_numpy(demo.acted[:, a] & (person == a if person is not None else True)))
    demos = Demonstrations(obs, actions, acted)
    if demos.steps == 0:
        raise LossError(f"losses.{name}: args.replays: {replays} has no step to learn from (every imitated "
                        f"agent was frozen or the episodes are empty)")
    return demos
