"""`Fast`: the original's fastest policy: token-to-box, two convolutions, two linear layers,
a 2-layer LSTM of 128, a critic MLP and a bilinear actor head over action embeddings (~0.58M
parameters on the arena)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from envs.info import EnvInfo

from .base import Policy, TokenToBox, layer_init

__all__ = ["Fast"]


class Fast(Policy):
    """CNN + LSTM policy.

    Args:
        env_info: env-derived sizes and names (linked from the data module).
        cnn_channels: channels of both convolutions.
        hidden_size: width of the encoder and of the LSTM.
        lstm_layers: number of LSTM layers.
        critic_hidden: width of the critic's hidden layer.
        actor_hidden: width of the actor's hidden layer.
        action_embedding_dim: size of each action's embedding in the bilinear actor head.
    """

    is_recurrent = True

    def __init__(self, env_info: EnvInfo, cnn_channels: int = 64, hidden_size: int = 128, lstm_layers: int = 2,
                 critic_hidden: int = 1024, actor_hidden: int = 512, action_embedding_dim: int = 16) -> None:
        super().__init__(env_info, cnn_channels=cnn_channels, hidden_size=hidden_size, lstm_layers=lstm_layers,
                         critic_hidden=critic_hidden, actor_hidden=actor_hidden,
                         action_embedding_dim=action_embedding_dim)
        self.hidden_size, self.lstm_layers = hidden_size, lstm_layers
        self.box = TokenToBox(env_info)
        f = self.box.num_features
        self.cnn = nn.Sequential(
            layer_init(nn.Conv2d(f, cnn_channels, kernel_size=5, stride=3)), nn.ReLU(),
            layer_init(nn.Conv2d(cnn_channels, cnn_channels, kernel_size=3, stride=1)), nn.ReLU(),
            nn.Flatten())
        with torch.no_grad():
            flat = self.cnn(torch.zeros(1, f, env_info.obs_height, env_info.obs_width)).shape[1]
        self.encoder = nn.Sequential(layer_init(nn.Linear(flat, hidden_size)), nn.ReLU(),
                                     layer_init(nn.Linear(hidden_size, hidden_size)), nn.ReLU())
        self.lstm = nn.LSTM(hidden_size, hidden_size, num_layers=lstm_layers, batch_first=True)
        for name, p in self.lstm.named_parameters():
            if "weight" in name:
                nn.init.orthogonal_(p, 1.0)
            else:
                nn.init.zeros_(p)
        self.critic = nn.Sequential(layer_init(nn.Linear(hidden_size, critic_hidden)), nn.Tanh(),
                                    layer_init(nn.Linear(critic_hidden, 1), std=1.0))
        self.actor = nn.Sequential(layer_init(nn.Linear(hidden_size, actor_hidden)), nn.ReLU())
        self.action_embeddings = nn.Embedding(env_info.num_actions, action_embedding_dim)
        nn.init.orthogonal_(self.action_embeddings.weight, 0.1)
        self.actor_bilinear = nn.Parameter(torch.empty(actor_hidden, action_embedding_dim))
        nn.init.orthogonal_(self.actor_bilinear, 0.1)
        self.actor_bias = nn.Parameter(torch.zeros(env_info.num_actions))

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> Tensor:
        """`[B, 2, layers, hidden]`: LSTM (h, c)."""
        return torch.zeros(batch, 2, self.lstm_layers, self.hidden_size, device=device)

    def forward_sequence(self, obs: Tensor, state: Tensor | None, is_init: Tensor
                         ) -> tuple[Tensor, Tensor, Tensor]:
        b, t = obs.shape[:2]
        x = self.encoder(self.cnn(self.box(obs.reshape(b * t, *obs.shape[2:])))).view(b, t, -1)
        if state is None:
            state = self.initial_state(b, obs.device)
        h = state[:, 0].transpose(0, 1).contiguous()
        c = state[:, 1].transpose(0, 1).contiguous()
        # Run the LSTM over chunks between episode starts, zeroing the state of rows that start.
        starts = [0] + (is_init[:, 1:].any(dim=0).nonzero().view(-1) + 1).tolist() if t > 1 else [0]
        outs = []
        for i, s in enumerate(starts):
            e = starts[i + 1] if i + 1 < len(starts) else t
            keep = (~is_init[:, s]).to(h.dtype).view(1, b, 1)
            h, c = h * keep, c * keep
            out, (h, c) = self.lstm(x[:, s:e], (h, c))
            outs.append(out)
        core = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        values = self.critic(core).squeeze(-1)
        logits = self.actor(core) @ (self.actor_bilinear @ self.action_embeddings.weight.T) + self.actor_bias
        return logits, values, torch.stack([h.transpose(0, 1), c.transpose(0, 1)], dim=1)
