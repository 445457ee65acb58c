"""Policies: `nn.Module`s built as `cls(env_info, **init_args)` (see `models.base.Policy`)."""

from .base import Policy, build_policy, policy_spec
from .fast import Fast
from .feedforward import FeedForward

__all__ = ["Fast", "FeedForward", "Policy", "build_policy", "policy_spec"]
