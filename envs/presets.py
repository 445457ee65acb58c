"""Ready-made games (GAME.md): the arena and its variants, and small hand-drawn ASCII maps."""

from __future__ import annotations

from typing import Any

from .config import ArenaMapBuilder, AsciiMapBuilder, AttackConfig, GameConfig

# Attack cost in the non-combat variants: more lasers than anyone can hold, so attacks always fail
# while the action space stays the same as in combat.
UNPAYABLE_ATTACK_COST = 100


def arena(num_agents: int = 24, combat: bool = True) -> GameConfig:
    """Four 25x25 rooms in a 2x2 grid inside a 6-cell border (62x62), `num_agents` in one team."""
    cfg = GameConfig(map_builder=ArenaMapBuilder(num_agents=num_agents))
    if not combat:
        cfg.actions.attack = AttackConfig(consumed_resources={"laser": UNPAYABLE_ATTACK_COST})
    return cfg


def arena_basic(num_agents: int = 24) -> GameConfig:
    """The arena without combat: attacks cost more lasers than can be held."""
    return arena(num_agents, combat=False)


def arena_combat(num_agents: int = 24) -> GameConfig:
    """The arena with combat: an attack costs one laser; armor blocks it."""
    return arena(num_agents, combat=True)


def arena_basic_easy_shaped(num_agents: int = 24) -> GameConfig:
    """No combat, shaped rewards for the production chain, and a 1-battery altar."""
    cfg = arena_basic(num_agents)
    cfg.objects["altar"] = cfg.objects["altar"].model_copy(update={"input_resources": {"battery_red": 1}})
    cfg.agent.rewards = {"heart": 1.0, "ore_red": 0.1, "battery_red": 0.8, "laser": 0.5,
                         "armor": 0.5, "blueprint": 0.5}
    cfg.agent.reward_caps = {"heart": 100.0, "ore_red": 1.0, "battery_red": 1.0, "laser": 1.0,
                             "armor": 1.0, "blueprint": 1.0}
    return cfg


def ascii(lines: list[str], **overrides: Any) -> GameConfig:
    """A game on a hand-drawn map; `overrides` are GameConfig fields (e.g. max_steps=50, agent={...})."""
    return GameConfig(map_builder=AsciiMapBuilder(lines=list(lines)), **overrides)


PRESETS = {
    "arena": arena,
    "arena_basic": arena_basic,
    "arena_combat": arena_combat,
    "arena_basic_easy_shaped": arena_basic_easy_shaped,
}
