"""Policies: `nn.Module`s built as `cls(env_info, **init_args)` (see `models.base.Policy`)."""

from .base import Policy, build_policy, policy_spec
from .fast import Fast
from .feedforward import FeedForward
from .transformer import Transformer
from .vit import ViT

__all__ = ["Fast", "FeedForward", "Policy", "Transformer", "ViT", "build_policy", "policy_spec"]
