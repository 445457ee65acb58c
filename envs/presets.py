"""Ready-made games (GAME.md): the arena and its variants, and small hand-drawn ASCII maps."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

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


def _merge(base: dict, over: dict) -> dict:
    """Recursive dict merge; a dict naming another `kind` (e.g. an ascii map over an arena) replaces."""
    out = dict(base)
    for k, v in over.items():
        b = out.get(k)
        if isinstance(v, dict) and isinstance(b, dict) and v.get("kind", b.get("kind")) == b.get("kind"):
            out[k] = _merge(b, v)
        else:
            out[k] = v
    return out


def resolve_game(game: str | GameConfig | dict, overrides: dict | None = None, where: str = "data.game") -> GameConfig:
    """A GameConfig (or its dict), or the name of a preset in `PRESETS`; then `overrides`
    (GameConfig fields, merged recursively) are applied and the result validated. A bad field raises a
    ValueError naming its path under `where` (e.g. `data.game.map_builder.lines: ...`)."""
    if isinstance(game, str):
        if game not in PRESETS:
            raise ValueError(f"{where}: unknown game preset {game!r} (presets: {', '.join(PRESETS)})")
        game = PRESETS[game]()
    elif isinstance(game, dict):
        game = _validate_game(game, where)
    elif not isinstance(game, GameConfig):
        raise ValueError(f"{where}: expected a preset name or a game config, got {type(game).__name__}")
    if overrides:
        game = _validate_game(_merge(game.model_dump(), overrides), where)
    return game


def _validate_game(fields: dict, where: str) -> GameConfig:
    try:
        return GameConfig.model_validate(fields)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join([where, *(str(p) for p in err['loc'])])}: {err['msg'].removeprefix('Value error, ')}" for err in e.errors())
        raise ValueError(problems) from None
