"""The common base of every policy, and the token-to-box observation shim.

A policy is built as `cls(env_info, **init_args)` and keeps `self.init_args` (a JSON-serialisable
dict), so a checkpoint stores `policy_spec(policy) == {"class_path", "init_args"}` plus the
`EnvInfo`, and `build_policy(spec, env_info)` rebuilds it. Observations are uint8 token arrays
`[..., num_tokens, 3]`; the recurrent state (if any) is one tensor with the batch dim first, so it
can be stored in the rollout next to the observation it was used with.

A policy's outputs are named, in a `TensorDict` with batch size `[B]`: `logits` (`[B, T, A]`, or
`[B, A]` for one step), `values` (`[B, T]` / `[B]`), `state` (the state after the last step; absent for
feed-forward policies) and whatever else the policy offers (`OPTIONAL_OUTPUTS`, e.g. `features`, the
representation the heads read), so a loss can ask for an output by name (`outputs["features"]`).
"""

from __future__ import annotations

import importlib
import json
import math
from typing import Any

import torch
from tensordict import TensorDict
from torch import Tensor, nn

from envs.info import EnvInfo

__all__ = ["OPTIONAL_OUTPUTS", "FeatureRemap", "Policy", "TokenToBox", "build_policy", "feature_remap_table",
           "layer_init", "lstm_with_resets", "policy_outputs", "policy_spec"]

# Outputs a policy may add beside logits, values and state (losses declare which ones they need).
OPTIONAL_OUTPUTS = ("features",)


def policy_outputs(logits: Tensor, values: Tensor, state: Tensor | None = None, **more: Tensor) -> TensorDict:
    """The named outputs of one call, batch size `[B]` (the first dim of `logits`)."""
    out = {"logits": logits, "values": values, **more}
    if state is not None:
        out["state"] = state
    return TensorDict(out, batch_size=logits.shape[:1])


class Policy(nn.Module):
    """Base of all policies.

    Subclasses implement `forward_sequence` (training, over `[B, T]`) and set `is_recurrent`;
    `forward_step` (acting, one step) defaults to a length-1 sequence.
    """

    is_recurrent: bool = False

    def __init__(self, env_info: EnvInfo, **init_args: Any) -> None:
        super().__init__()
        json.dumps(init_args)  # fail early if a checkpoint could not store them
        self.env_info = env_info
        self.init_args = dict(init_args)

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> Tensor | None:
        """The state at an episode start, batch dim first; `None` for feed-forward policies."""
        return None

    def forward_sequence(self, obs: Tensor, state: Tensor | None, is_init: Tensor) -> TensorDict:
        """obs uint8 `[B, T, tokens, 3]`, `state` `[B, ...]` at t=0, `is_init` bool `[B, T]` (episode
        starts: the state is zeroed before that step). Returns the named outputs (`policy_outputs`):
        `logits` `[B, T, A]`, `values` `[B, T]`, `state` after the last step, and any extras."""
        raise NotImplementedError

    def forward_step(self, obs: Tensor, state: Tensor | None, is_init: Tensor) -> TensorDict:
        """One step: obs `[B, tokens, 3]`, is_init `[B]` -> outputs with `logits` `[B, A]`, `values` `[B]`,
        `state` (the next state) and extras without the time dim."""
        out = self.forward_sequence(obs.unsqueeze(1), state, is_init.unsqueeze(1))
        step = {k: v if k == "state" else v[:, 0] for k, v in out.items()}
        return TensorDict(step, batch_size=out.batch_size)


def policy_spec(policy: Policy) -> dict:
    """`{"class_path", "init_args"}`: what a checkpoint stores to rebuild `policy` (with its EnvInfo)."""
    cls = type(policy)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(policy.init_args)}


def build_policy(spec: dict, env_info: EnvInfo) -> Policy:
    """Rebuild a policy from `policy_spec(...)` output."""
    module_name, _, cls_name = spec["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(env_info, **spec.get("init_args", {}))


def layer_init(layer: nn.Module, std: float = math.sqrt(2), bias: float = 0.0) -> nn.Module:
    """Orthogonal weights, constant bias (CleanRL / PufferLib)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class TokenToBox(nn.Module):
    """Scatter observation tokens `(location, feature_id, value)` into a `[features, H, W]` box,
    each value divided by its feature's normalisation (EnvInfo.feature_normalizations).
    Location is `(row << 4) | col`; empty tokens (0xFF) and unknown feature ids are dropped."""

    def __init__(self, env_info: EnvInfo) -> None:
        super().__init__()
        self.num_features = len(env_info.feature_names)
        self.height, self.width = env_info.obs_height, env_info.obs_width
        norms = torch.tensor(env_info.feature_normalizations, dtype=torch.float32)
        # One extra "dump" feature for invalid tokens, dropped after the scatter.
        self.register_buffer("inv_norm", torch.cat([1.0 / norms, torch.zeros(1)]), persistent=False)

    def forward(self, obs: Tensor) -> Tensor:
        lead = obs.shape[:-2]
        tokens = obs.reshape(-1, obs.shape[-2], 3)
        b, f, h, w = tokens.shape[0], self.num_features, self.height, self.width
        loc, feat = tokens[..., 0].to(torch.int32), tokens[..., 1].to(torch.int32)
        row, col = loc >> 4, loc & 15
        valid = (loc != 255) & (feat < f) & (row < h) & (col < w)
        # Scatter into a flat [B, H, W, F] buffer (channels-last, which the convolutions prefer);
        # invalid tokens go to one dump slot past the end.
        sample = torch.arange(b, dtype=torch.int32, device=obs.device).view(b, 1) * (h * w * f)
        index = torch.where(valid, sample + (row * w + col) * f + feat, b * h * w * f).view(-1).long()
        values = tokens[..., 2].to(torch.float32) * self.inv_norm[torch.where(valid, feat, f).long()]
        flat = torch.zeros(b * h * w * f + 1, device=obs.device)
        flat.index_put_((index,), values.view(-1))
        box = flat[:-1].view(b, h, w, f).permute(0, 3, 1, 2)
        return box.reshape(*lead, f, h, w) if len(lead) != 1 else box


def feature_remap_table(policy_features: list[str], env_features: list[str]) -> Tensor | None:
    """uint8[256]: env feature id -> the policy's id of the same name (0xFF if unknown); None if they agree."""
    if list(policy_features[: len(env_features)]) == list(env_features):
        return None
    by_name = {name: i for i, name in enumerate(policy_features)}
    table = torch.full((256,), 0xFF, dtype=torch.uint8)
    for env_id, name in enumerate(env_features[:255]):
        if by_name.get(name, 0xFF) < 0xFF:
            table[env_id] = by_name[name]
    return table


class FeatureRemap(nn.Module):
    """Observation tokens of an env that numbers features differently, renumbered for a policy trained on
    other ids (its `env_info`): byte 1 (feature id) of `[..., tokens, 3]` goes through a lookup table built
    by name (`feature_remap_table`); a token whose feature the policy never saw becomes `0xFF 0xFF 0xFF`,
    exactly what an unused token looks like, so every policy already ignores it. Values are raw bytes, so
    the policy's own normalisations still apply."""

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table.to(torch.uint8), persistent=False)

    @classmethod
    def between(cls, trained_on: EnvInfo, played: EnvInfo) -> "FeatureRemap | None":
        """The remap from `played`'s feature ids to `trained_on`'s, or None when they agree."""
        table = feature_remap_table(list(trained_on.feature_names), list(played.feature_names))
        return cls(table) if table is not None else None

    def forward(self, obs: Tensor) -> Tensor:
        ids = self.table.to(obs.device)[obs[..., 1].long()]
        out = obs.clone()
        out[..., 1] = ids
        unknown = (ids == 0xFF) & (obs[..., 1] != 0xFF)
        out[unknown] = 0xFF
        return out


def lstm_with_resets(lstm: nn.LSTM, x: Tensor, state: Tensor, is_init: Tensor) -> tuple[Tensor, Tensor]:
    """Run `lstm` (batch_first) over `x` `[B, T, in]` from `state` `[B, 2, layers, hidden]` (h, c), zeroing a
    row's state before each step where `is_init` `[B, T]` is set. Returns outputs `[B, T, hidden]` and the
    state after the last step (same layout). The LSTM runs over chunks between the steps where any row
    starts an episode."""
    b, t = is_init.shape
    h = state[:, 0].transpose(0, 1).contiguous()
    c = state[:, 1].transpose(0, 1).contiguous()
    starts = [0] + (is_init[:, 1:].any(dim=0).nonzero().view(-1) + 1).tolist() if t > 1 else [0]
    outs = []
    for i, s in enumerate(starts):
        e = starts[i + 1] if i + 1 < len(starts) else t
        keep = (~is_init[:, s]).to(h.dtype).view(1, b, 1)
        h, c = h * keep, c * keep
        out, (h, c) = lstm(x[:, s:e], (h, c))
        outs.append(out)
    core = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
    return core, torch.stack([h.transpose(0, 1), c.transpose(0, 1)], dim=1)
