"""What a policy needs to know about an env, derived from its GameConfig (never typed twice)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from .config import GameConfig


class EnvInfo(BaseModel):
    """Env-derived sizes and names: linked into models by the CLI and stored in policy artifacts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feature_names: list[str]
    """Name of each observation feature id (index = id)."""
    feature_normalizations: list[float]
    """Divisor of each feature id's value."""
    action_names: list[str]
    num_tokens: int
    obs_height: int
    obs_width: int
    num_agents: int

    @property
    def num_actions(self) -> int:
        return len(self.action_names)

    @classmethod
    def from_config(cls, config: GameConfig) -> "EnvInfo":
        return cls(feature_names=config.feature_names, feature_normalizations=config.feature_normalizations,
                   action_names=config.action_names, num_tokens=config.num_observation_tokens,
                   obs_height=config.obs_height, obs_width=config.obs_width, num_agents=config.num_agents)
