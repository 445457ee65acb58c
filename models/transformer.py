"""`Transformer`: the ViT's token encoder with a causal transformer memory over the last K steps.

Each step's observation is encoded (`models.vit.LatentAttentionEncoder`) and projected to `model_dim`;
`layers` pre-LayerNorm blocks then let each step attend to itself and to the previous `memory` steps of
its own episode, with a learned per-head bias for each age (0..K steps back).

The recurrent state is one tensor `[B, K, layers * model_dim + 1]`: for each of the last K steps, the
input of every block at that step (the cache the blocks attend over, as Transformer-XL keeps it), and
last a validity flag (1 = a step of the current episode). Keeping each block's *input* rather than the
raw encodings makes acting one step at a time exactly the function of training over a sequence: a
block at step t sees the same K + 1 inputs either way. A zeroed state is an empty memory, so the rollout
stores the state per step like the LSTM's, the actor's zeroing at episode starts clears it, and a BPTT
segment starts from the memory the actor had; `is_init` inside a sequence masks everything before it.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import Tensor, nn

from envs.info import EnvInfo

from .base import Policy, layer_init, policy_outputs
from .vit import LatentAttentionEncoder, _Block

__all__ = ["Transformer"]


class Transformer(Policy):
    """Latent-attention token encoder + causal transformer memory policy.

    Args:
        env_info: env-derived sizes and names (linked from the data module).
        attr_embed_dim: size of the learned feature-id embedding of each token.
        num_freqs: Fourier frequencies per coordinate.
        num_latents: learned latent queries of the encoder.
        latent_dim: width of the encoder's latents.
        encoder_heads: attention heads of the encoder.
        cross_layers: the encoder's cross-attention blocks.
        self_layers: the encoder's self-attention blocks over the latents.
        model_dim: width of the memory blocks.
        memory: K, how many previous steps each step attends to.
        layers: memory blocks.
        heads: attention heads of the memory blocks.
        mlp_ratio: hidden width of every block's MLP, in multiples of its width.
        actor_hidden: width of the actor's hidden layer.
        critic_hidden: width of the critic's hidden layer.
    """

    is_recurrent = True

    def __init__(self, env_info: EnvInfo, attr_embed_dim: int = 8, num_freqs: int = 3, num_latents: int = 12,
                 latent_dim: int = 64, encoder_heads: int = 4, cross_layers: int = 1, self_layers: int = 1,
                 model_dim: int = 32, memory: int = 16, layers: int = 2, heads: int = 4, mlp_ratio: int = 4,
                 actor_hidden: int = 256, critic_hidden: int = 512) -> None:
        super().__init__(env_info, attr_embed_dim=attr_embed_dim, num_freqs=num_freqs, num_latents=num_latents,
                         latent_dim=latent_dim, encoder_heads=encoder_heads, cross_layers=cross_layers,
                         self_layers=self_layers, model_dim=model_dim, memory=memory, layers=layers, heads=heads,
                         mlp_ratio=mlp_ratio, actor_hidden=actor_hidden, critic_hidden=critic_hidden)
        if memory < 1 or layers < 1:
            raise ValueError(f"memory and layers must be >= 1, got memory={memory}, layers={layers}")
        self.model_dim, self.memory, self.layers, self.heads = model_dim, memory, layers, heads
        self.encoder = LatentAttentionEncoder(env_info, attr_embed_dim, num_freqs, num_latents, latent_dim,
                                              encoder_heads, cross_layers, self_layers, mlp_ratio)
        self.project = nn.Linear(latent_dim, model_dim)
        self.blocks = nn.ModuleList(_Block(model_dim, heads, mlp_ratio) for _ in range(layers))
        self.age_bias = nn.Parameter(torch.zeros(layers, heads, memory + 1))  # score bias per step back
        self.norm = nn.LayerNorm(model_dim)
        self.actor = nn.Sequential(layer_init(nn.Linear(model_dim, actor_hidden)), nn.ReLU(),
                                   layer_init(nn.Linear(actor_hidden, env_info.num_actions), std=0.01))
        self.critic = nn.Sequential(layer_init(nn.Linear(model_dim, critic_hidden)), nn.Tanh(),
                                    layer_init(nn.Linear(critic_hidden, 1), std=1.0))

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> Tensor:
        """`[B, K, layers * model_dim + 1]`: an empty memory (every step invalid)."""
        return torch.zeros(batch, self.memory, self.layers * self.model_dim + 1, device=device)

    def forward_sequence(self, obs: Tensor, state: Tensor | None, is_init: Tensor) -> TensorDict:
        b, t = obs.shape[:2]
        k, d = self.memory, self.model_dim
        x = self.project(self.encoder(obs.reshape(b * t, *obs.shape[2:]))).view(b, t, d)
        if state is None:
            state = self.initial_state(b, obs.device)
        mem = state[..., :-1].view(b, k, self.layers, d)
        mem_valid = state[..., -1] > 0.5                                    # [B, K]
        # Keys are the K memory steps (positions -K..-1) then the T steps of this call (0..T-1).
        episode = torch.cumsum(is_init.to(torch.int64), dim=1)            # [B, T]; memory is episode 0
        key_episode = torch.cat([episode.new_zeros(b, k), episode], dim=1)  # [B, K+T]
        key_valid = torch.cat([mem_valid, mem_valid.new_ones(b, t)], dim=1)
        pos = torch.arange(-k, t, device=obs.device)
        age = torch.arange(t, device=obs.device).view(t, 1) - pos.view(1, k + t)  # [T, K+T]
        allowed = ((age >= 0) & (age <= k)).view(1, t, k + t) & key_valid.view(b, 1, k + t) & (
            key_episode.view(b, 1, k + t) == episode.view(b, t, 1))        # [B, T, K+T]; the diagonal is always on
        age = age.clamp(0, k)
        new_mem = []
        for i, block in enumerate(self.blocks):
            context = torch.cat([mem[:, :, i], x], dim=1)                 # this block's inputs, [B, K+T, d]
            new_mem.append(context[:, -k:])
            bias = self.age_bias[i][:, age]                               # [H, T, K+T]
            mask = torch.where(allowed.unsqueeze(1), bias.unsqueeze(0), float("-inf"))
            x = block(x, context, mask)
        core = self.norm(x)
        # The next memory: the last K steps' block inputs, kept where they belong to the last step's episode.
        keep = (key_valid & (key_episode == episode[:, -1:]))[:, -k:]
        new_mem = torch.stack(new_mem, dim=2) * keep.view(b, k, 1, 1).to(x.dtype)
        new_state = torch.cat([new_mem.reshape(b, k, self.layers * d), keep.unsqueeze(-1).to(x.dtype)], dim=-1)
        return policy_outputs(self.actor(core), self.critic(core).squeeze(-1), new_state, features=core)
