"""`FeedForward`: a small memoryless baseline (token-to-box, one convolution, an MLP)."""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import Tensor, nn

from envs.info import EnvInfo

from .base import Policy, TokenToBox, layer_init, policy_outputs

__all__ = ["FeedForward"]


class FeedForward(Policy):
    """Feed-forward policy for tests and quick baselines.

    Args:
        env_info: env-derived sizes and names (linked from the data module).
        channels: channels of the convolution.
        hidden_size: width of the MLP.
    """

    is_recurrent = False

    def __init__(self, env_info: EnvInfo, channels: int = 32, hidden_size: int = 128) -> None:
        super().__init__(env_info, channels=channels, hidden_size=hidden_size)
        self.box = TokenToBox(env_info)
        f = self.box.num_features
        self.cnn = nn.Sequential(layer_init(nn.Conv2d(f, channels, kernel_size=3, stride=2)), nn.ReLU(),
                                 nn.Flatten())
        with torch.no_grad():
            flat = self.cnn(torch.zeros(1, f, env_info.obs_height, env_info.obs_width)).shape[1]
        self.trunk = nn.Sequential(layer_init(nn.Linear(flat, hidden_size)), nn.ReLU(),
                                   layer_init(nn.Linear(hidden_size, hidden_size)), nn.ReLU())
        self.actor = layer_init(nn.Linear(hidden_size, env_info.num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(hidden_size, 1), std=1.0)

    def forward_sequence(self, obs: Tensor, state: Tensor | None, is_init: Tensor) -> TensorDict:
        b, t = obs.shape[:2]
        x = self.trunk(self.cnn(self.box(obs.reshape(b * t, *obs.shape[2:]))))
        return policy_outputs(self.actor(x).view(b, t, -1), self.critic(x).view(b, t), features=x.view(b, t, -1))
