"""`ViT`: a token policy in the manner of the original's default (latent attention over observation tokens).

Each observation token `(location, feature id, value)` becomes an embedding: Fourier features of its
row and column, a learned embedding of its feature id and its value divided by the feature's
normalisation (`TokenEmbedding`). A few learned latent queries cross-attend over the tokens with a
key-padding mask (padding tokens 0xFF, and tokens whose feature id the policy does not know, take no
part), the latents attend to each other, and their mean is the observation's encoding
(`LatentAttentionEncoder`). No dense box is ever built, and the encoder is a set function: permuting
the valid tokens or adding padding tokens leaves its output unchanged (up to float rounding).

The encoding feeds an LSTM core, then an actor and a critic MLP. `models.transformer.Transformer`
reuses the encoder with a transformer memory instead of the LSTM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import Tensor, nn

from envs.info import EnvInfo

from .base import Policy, layer_init, lstm_with_resets, policy_outputs

__all__ = ["LatentAttentionEncoder", "TokenEmbedding", "ViT"]


class TokenEmbedding(nn.Module):
    """Tokens `[B, N, 3]` uint8 -> embeddings `[B, n, attr_embed_dim + 4 * num_freqs + 1]` and a validity
    mask `[B, n]`, where `n <= N` is the batch's last valid token + 1 (the padding tail is cut).

    A token is valid when its location is not 0xFF, its feature id is one the policy knows and its cell is
    inside the view. Coordinates are scaled to [-1, 1]; each gets `cos(c * 2^k), sin(c * 2^k)` for
    k < num_freqs. Invalid tokens' embeddings are zero."""

    def __init__(self, env_info: EnvInfo, attr_embed_dim: int = 8, num_freqs: int = 3) -> None:
        super().__init__()
        self.num_features = len(env_info.feature_names)
        self.height, self.width = env_info.obs_height, env_info.obs_width
        self.num_freqs = num_freqs
        self.out_dim = attr_embed_dim + 4 * num_freqs + 1
        # One extra row (index num_features) for invalid tokens; their output is masked to zero anyway.
        self.attr = nn.Embedding(self.num_features + 1, attr_embed_dim)
        nn.init.trunc_normal_(self.attr.weight, std=0.02)
        norms = torch.tensor(env_info.feature_normalizations, dtype=torch.float32)
        self.register_buffer("inv_norm", torch.cat([1.0 / norms, torch.zeros(1)]), persistent=False)
        self.register_buffer("freqs", 2.0 ** torch.arange(num_freqs, dtype=torch.float32), persistent=False)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        loc = tokens[..., 0].to(torch.int64)
        feat = tokens[..., 1].to(torch.int64)
        row, col = loc >> 4, loc & 15
        valid = (loc != 255) & (feat < self.num_features) & (row < self.height) & (col < self.width)
        # Cut the padding tail (the engine writes valid tokens first): keeps attention over ~40 tokens, not 200.
        n = int(torch.where(valid, torch.arange(1, valid.shape[1] + 1, device=valid.device), 0).max().clamp(min=1))
        valid, loc, feat, row, col = valid[:, :n], loc[:, :n], feat[:, :n], row[:, :n], col[:, :n]
        feat = torch.where(valid, feat, self.num_features)
        y = row.to(torch.float32) / max(self.height - 1, 1) * 2 - 1
        x = col.to(torch.float32) / max(self.width - 1, 1) * 2 - 1
        fy, fx = y.unsqueeze(-1) * self.freqs, x.unsqueeze(-1) * self.freqs
        coords = torch.cat([fx.cos(), fx.sin(), fy.cos(), fy.sin()], dim=-1)
        value = tokens[:, :n, 2].to(torch.float32) * self.inv_norm[feat]
        emb = torch.cat([self.attr(feat), coords, value.unsqueeze(-1)], dim=-1)
        return emb * valid.unsqueeze(-1).to(emb.dtype), valid


class _Attention(nn.Module):
    """Multi-head attention of queries `[B, Q, D]` over keys/values `[B, K, D]` (SDPA), with an optional
    mask broadcastable to `[B, heads, Q, K]` (bool: True takes part; float: added to the scores)."""

    def __init__(self, dim: int, heads: int, kv_dim: int | None = None, bias: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=bias)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim, bias=bias)
        self.out = nn.Linear(dim, dim)

    def forward(self, q_in: Tensor, kv_in: Tensor, mask: Tensor | None = None) -> Tensor:
        b, nq, d = q_in.shape
        h = self.heads
        q = self.q(q_in).view(b, nq, h, d // h).transpose(1, 2)
        k, v = self.kv(kv_in).view(b, kv_in.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(out.transpose(1, 2).reshape(b, nq, d))


class _Block(nn.Module):
    """Pre-LayerNorm attention block: `x + attn(LN(x), LN(context))`, then `x + MLP(LN(x))`. Cross blocks
    (`cross=True`) attend over a context of another width (`kv_dim`, its own LayerNorm, no projection bias);
    self blocks over `x` itself or over a given context of the same width (e.g. memory + x)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, kv_dim: int | None = None, cross: bool = False) -> None:
        super().__init__()
        self.cross = cross
        self.ln_q = nn.LayerNorm(dim)
        self.ln_kv = nn.LayerNorm(kv_dim or dim) if cross else None  # self-attention: ln_q serves keys too
        self.attn = _Attention(dim, heads, kv_dim, bias=not cross)
        self.ln_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        q = self.ln_q(x)
        if self.cross:
            kv = self.ln_kv(context)
        else:
            kv = q if context is None else self.ln_q(context)
        x = x + self.attn(q, kv, mask)
        return x + self.mlp(self.ln_mlp(x))


class LatentAttentionEncoder(nn.Module):
    """Observation tokens `[B, N, 3]` -> `[B, latent_dim]`: `num_latents` learned queries cross-attend over
    the token embeddings (`cross_layers` blocks; padding masked), then `self_layers` self-attention blocks
    over the latents, a final LayerNorm and the mean over the latents."""

    def __init__(self, env_info: EnvInfo, attr_embed_dim: int = 8, num_freqs: int = 3, num_latents: int = 12,
                 latent_dim: int = 64, num_heads: int = 4, cross_layers: int = 1, self_layers: int = 1,
                 mlp_ratio: int = 4) -> None:
        super().__init__()
        self.embed = TokenEmbedding(env_info, attr_embed_dim, num_freqs)
        self.latents = nn.Parameter(torch.empty(num_latents, latent_dim))
        nn.init.trunc_normal_(self.latents, std=0.02)
        self.cross = nn.ModuleList(_Block(latent_dim, num_heads, mlp_ratio, self.embed.out_dim, cross=True)
                                   for _ in range(cross_layers))
        self.self_attn = nn.ModuleList(_Block(latent_dim, num_heads, mlp_ratio) for _ in range(self_layers))
        self.norm = nn.LayerNorm(latent_dim)
        self.out_dim = latent_dim

    def forward(self, tokens: Tensor) -> Tensor:
        emb, valid = self.embed(tokens)
        # A row with no valid token would attend to nothing (NaN): let it see its first (zero) token instead.
        valid = valid.clone()
        valid[:, 0] |= ~valid.any(dim=1)
        mask = valid.view(valid.shape[0], 1, 1, valid.shape[1])
        x = self.latents.expand(emb.shape[0], -1, -1)
        for block in self.cross:
            x = block(x, emb, mask)
        for block in self.self_attn:
            x = block(x)
        return self.norm(x).mean(dim=1)


class ViT(Policy):
    """Latent-attention token encoder + LSTM policy (~0.14M parameters on the arena with the defaults).

    Args:
        env_info: env-derived sizes and names (linked from the data module).
        attr_embed_dim: size of the learned feature-id embedding of each token.
        num_freqs: Fourier frequencies per coordinate (each gives a cos and a sin for row and column).
        num_latents: learned latent queries.
        latent_dim: width of the latents (and of the encoding).
        num_heads: attention heads.
        cross_layers: cross-attention blocks (latents over tokens).
        self_layers: self-attention blocks over the latents.
        mlp_ratio: hidden width of each block's MLP, in multiples of latent_dim.
        hidden_size: width of the LSTM core.
        actor_hidden: width of the actor's hidden layer.
        critic_hidden: width of the critic's hidden layer.
    """

    is_recurrent = True

    def __init__(self, env_info: EnvInfo, attr_embed_dim: int = 8, num_freqs: int = 3, num_latents: int = 12,
                 latent_dim: int = 64, num_heads: int = 4, cross_layers: int = 1, self_layers: int = 1,
                 mlp_ratio: int = 4, hidden_size: int = 64, actor_hidden: int = 256, critic_hidden: int = 512) -> None:
        super().__init__(env_info, attr_embed_dim=attr_embed_dim, num_freqs=num_freqs, num_latents=num_latents,
                         latent_dim=latent_dim, num_heads=num_heads, cross_layers=cross_layers,
                         self_layers=self_layers, mlp_ratio=mlp_ratio, hidden_size=hidden_size,
                         actor_hidden=actor_hidden, critic_hidden=critic_hidden)
        self.hidden_size = hidden_size
        self.encoder = LatentAttentionEncoder(env_info, attr_embed_dim, num_freqs, num_latents, latent_dim,
                                              num_heads, cross_layers, self_layers, mlp_ratio)
        self.lstm = nn.LSTM(latent_dim, hidden_size, num_layers=1, batch_first=True)
        for name, p in self.lstm.named_parameters():
            if "weight" in name:
                nn.init.orthogonal_(p, 1.0)
            else:
                nn.init.constant_(p, 1.0)
        self.actor = nn.Sequential(layer_init(nn.Linear(hidden_size, actor_hidden)), nn.ReLU(),
                                   layer_init(nn.Linear(actor_hidden, env_info.num_actions), std=0.01))
        self.critic = nn.Sequential(layer_init(nn.Linear(hidden_size, critic_hidden)), nn.Tanh(),
                                    layer_init(nn.Linear(critic_hidden, 1), std=1.0))

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> Tensor:
        """`[B, 2, 1, hidden]`: LSTM (h, c)."""
        return torch.zeros(batch, 2, 1, self.hidden_size, device=device)

    def forward_sequence(self, obs: Tensor, state: Tensor | None, is_init: Tensor) -> TensorDict:
        b, t = obs.shape[:2]
        x = self.encoder(obs.reshape(b * t, *obs.shape[2:])).view(b, t, -1)
        if state is None:
            state = self.initial_state(b, obs.device)
        core, state = lstm_with_resets(self.lstm, x, state, is_init)
        return policy_outputs(self.actor(core), self.critic(core).squeeze(-1), state, features=core)

