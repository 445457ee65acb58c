"""`Fast`: the original's fastest policy: token-to-box, two convolutions, two linear layers,
a 2-layer LSTM of 128, a critic MLP and a bilinear actor head over action embeddings (~0.58M
parameters on the arena)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import Tensor, nn

from envs.info import EnvInfo

from .base import Policy, TokenToBox, layer_init, lstm_with_resets, policy_outputs

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

    The first convolution is computed straight from the tokens (`_sparse_cnn`: an embedding-bag over a
    per-location copy of the kernel) instead of scattering a mostly empty box and convolving it: the same
    function of the same parameters, equal up to float rounding. On a CPU that is about 2x faster
    forward + backward for training minibatches and 2.4x faster when acting (no grad: the kernel copy is
    cached until the weights change). Batches with grad below `SPARSE_MIN_ROWS` rows use the box and
    `self.cnn` (rebuilding the kernel copy does not pay off there).
    """

    SPARSE_MIN_ROWS = 1024

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
        self._init_sparse_cnn()
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

    def _init_sparse_cnn(self) -> None:
        """Index map of `_sparse_cnn`: for each input cell (row, col) and output cell (py, px) of the first
        convolution, the kernel offset dy * K + dx that links them, or K * K (a zero row) if none."""
        conv = self.cnn[0]
        (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
        h, w = self.box.height, self.box.width
        self._sparse_ok = (conv.padding in ((0, 0), "valid") and conv.dilation == (1, 1) and conv.groups == 1
                           and h >= kh and w >= kw and h <= 16 and w <= 16)
        oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
        self._conv1_out = (oh, ow)
        dy = torch.arange(h).view(h, 1, 1, 1) - sh * torch.arange(oh).view(1, 1, oh, 1)
        dx = torch.arange(w).view(1, w, 1, 1) - sw * torch.arange(ow).view(1, 1, 1, ow)
        inside = (dy >= 0) & (dy < kh) & (dx >= 0) & (dx < kw)
        self.register_buffer("_kernel_map", torch.where(inside, dy * kw + dx, kh * kw).view(-1), persistent=False)
        # Token decoding in one lookup: (location << 8 | feature id) -> the token's row of the conv table, or the
        # zero row past its end (padding, a feature the policy does not know, a cell outside the window).
        f = self.box.num_features
        loc, feat = torch.arange(256).view(256, 1), torch.arange(256).view(1, 256)
        row, col = loc >> 4, loc & 15
        known = (loc != 255) & (feat < f) & (row < h) & (col < w)
        self.register_buffer("_token_rows", torch.where(known, (feat * h + row) * w + col, f * h * w).view(-1),
                             persistent=False)
        self.register_buffer("_feature_scale", torch.cat([self.box.inv_norm[:f], torch.zeros(256 - f)]),
                             persistent=False)

    def _conv_table(self) -> Tensor:
        """`[features * H * W + 1, oh * ow * C]`: row (feature, row, col) holds that cell's weight in every output
        cell of the first convolution (zero where the kernel does not reach it); the last row is zeros, the
        row of tokens that add nothing (`_token_rows`)."""
        conv1 = self.cnn[0]
        (kh, kw), (oh, ow), c = conv1.kernel_size, self._conv1_out, conv1.out_channels
        f = self.box.num_features
        kernel = conv1.weight.permute(1, 2, 3, 0).reshape(f, kh * kw, c)
        kernel = torch.cat([kernel, kernel.new_zeros(f, 1, c)], dim=1)
        table = kernel[:, self._kernel_map].reshape(f * self.box.height * self.box.width, oh * ow * c)
        return torch.cat([table, table.new_zeros(1, oh * ow * c)])

    def _cached_conv_table(self) -> Tensor:
        """`_conv_table()` without autograd, rebuilt only when `cnn.0.weight` changed (acting calls this
        every step with the same weights; any in-place update, load or move changes the key)."""
        weight = self.cnn[0].weight
        key = (weight._version, weight.data_ptr(), weight.device, weight.dtype)
        if getattr(self, "_table_key", None) != key:
            with torch.no_grad():
                self._table = self._conv_table()
            self._table_key = key
        return self._table

    def _sparse_cnn(self, tokens: Tensor) -> Tensor:
        """`self.cnn(self.box(tokens))` for tokens `[B, num_tokens, 3]`, without building the box.

        The first convolution is linear in the box, so its output is a sum over the valid tokens of
        value / norm times the kernel slice that links the token's cell to every output cell: one
        `embedding_bag` per observation over a table `[features * H * W, oh * ow * C]` gathered from the
        kernel (rebuilt every call with grad, so gradients flow to `cnn.0.weight`), over the valid tokens
        only. Like the box, each (location, feature) is assumed to appear at most once per
        observation (the engine writes one token per feature and cell)."""
        conv1, conv2 = self.cnn[0], self.cnn[2]
        (oh, ow), c = self._conv1_out, conv1.out_channels
        # One bag per observation holding only its tokens in use (bags in order, so no sort is needed); a token
        # in use whose feature or cell the policy does not know maps to the table's zero row and adds 0 (cheaper
        # than `padding_idx`, which takes embedding_bag off its fast path: ~2.5x slower here).
        in_use = tokens[..., 0] != 255
        counts = in_use.sum(1)
        used = tokens.reshape(-1, 3)[in_use.view(-1)].to(torch.int32)
        feat = used[:, 1]
        index = self._token_rows.index_select(0, (used[:, 0] << 8) | feat)
        values = used[:, 2].to(torch.float32) * self._feature_scale.index_select(0, feat)
        table = self._conv_table() if torch.is_grad_enabled() else self._cached_conv_table()
        x = F.embedding_bag(index, table, counts.cumsum(0) - counts, mode="sum",
                            per_sample_weights=values)  # [B, oh * ow * C], ordered (py, px, c)
        x = torch.relu(x.view(-1, oh, ow, c) + conv1.bias)
        if conv2.kernel_size == (oh, ow) and conv2.padding in ((0, 0), "valid") and conv2.groups == 1:
            # The second convolution covers the whole map: a linear layer over (py, px, c).
            return self.cnn[4](torch.relu(F.linear(x.reshape(x.shape[0], -1),
                                                   conv2.weight.permute(0, 2, 3, 1).reshape(conv2.out_channels, -1),
                                                   conv2.bias)))
        return self.cnn[2:](x.permute(0, 3, 1, 2))

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> Tensor:
        """`[B, 2, layers, hidden]`: LSTM (h, c)."""
        return torch.zeros(batch, 2, self.lstm_layers, self.hidden_size, device=device)

    def forward_step(self, obs: Tensor, state: Tensor | None, is_init: Tensor) -> TensorDict:
        """One acting step. Without grad it skips the sequence machinery of `forward_sequence` (the time dim,
        the episode-start chunking, the box fallback): the same function, the same operators on the same
        numbers, so the outputs are bitwise those of `forward_sequence` on a length-1 sequence (tested)."""
        if torch.is_grad_enabled() or not self._sparse_ok:
            return super().forward_step(obs, state, is_init)
        x = self.encoder(self._sparse_cnn(obs))
        if state is None:
            state = self.initial_state(obs.shape[0], obs.device)
        hc = (state * (~is_init).to(state.dtype).view(-1, 1, 1, 1)).permute(1, 2, 0, 3)  # [2, layers, B, H]
        core, (h, c) = self.lstm(x.unsqueeze(1), (hc[0].contiguous(), hc[1].contiguous()))
        core = core[:, 0]
        logits, values = self._heads(core)
        return policy_outputs(logits, values, torch.stack((h, c)).permute(2, 0, 1, 3).contiguous(), features=core)

    def forward_sequence(self, obs: Tensor, state: Tensor | None, is_init: Tensor) -> TensorDict:
        b, t = obs.shape[:2]
        tokens = obs.reshape(b * t, *obs.shape[2:])
        if self._sparse_ok and (b * t >= self.SPARSE_MIN_ROWS or not torch.is_grad_enabled()):
            x = self._sparse_cnn(tokens)
        else:
            x = self.cnn(self.box(tokens))
        x = self.encoder(x).view(b, t, -1)
        if state is None:
            state = self.initial_state(b, obs.device)
        core, state = lstm_with_resets(self.lstm, x, state, is_init)
        logits, values = self._heads(core)
        return policy_outputs(logits, values, state, features=core)

    def _heads(self, core: Tensor) -> tuple[Tensor, Tensor]:
        """Action logits (bilinear over the action embeddings) and the critic's value of LSTM outputs `core`."""
        logits = self.actor(core) @ (self.actor_bilinear @ self.action_embeddings.weight.T) + self.actor_bias
        return logits, self.critic(core).squeeze(-1)
