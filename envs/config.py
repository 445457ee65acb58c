"""Game configuration: the single source of truth for an arena game.

`GameConfig` is a pydantic model. It is validated once in Python and converted once, by
`GameConfig.engine_spec()`, into the plain dict of resolved ids that the C++ binding reads.
Nothing else describes the game: presets build `GameConfig`s, YAML files hold their fields.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, model_validator

# Item ids are the positions in this list (GAME.md).
DEFAULT_ITEMS: list[str] = [
    "ore_red", "ore_blue", "ore_green",
    "battery_red", "battery_blue", "battery_green",
    "heart", "armor", "laser", "blueprint",
]

# Observation feature ids and normalisations (GAME.md; where it is silent, the original's table).
# Inventory of item i is feature INVENTORY_FEATURE_BASE + i. Ids 4, 12, 13, 15 and 16 are never emitted
# by this engine. `engine_spec()` hands these ids to the engine, which knows the features by name only.
FEATURES: dict[int, tuple[str, float]] = {
    0: ("type_id", 1.0),
    1: ("agent:group", 10.0),
    2: ("agent:frozen", 1.0),
    3: ("agent:orientation", 1.0),
    4: ("agent:reserved_for_future_use", 255.0),
    5: ("converting", 1.0),
    6: ("swappable", 1.0),
    7: ("episode_completion_pct", 255.0),
    8: ("last_action", 10.0),
    9: ("last_action_arg", 10.0),
    10: ("last_reward", 100.0),
    11: ("agent:glyph", 255.0),
    12: ("agent:visitation_counts", 1000.0),
    13: ("tag", 10.0),
    14: ("cooldown_remaining", 255.0),
    15: ("clipped", 1.0),
    16: ("remaining_uses", 255.0),
}
INVENTORY_FEATURE_BASE = 17
INVENTORY_NORMALIZATION = 100.0

# Bounds that keep every value inside what the engine's arithmetic and observations were written for.
MAX_ITEM_COUNT = 255          # an inventory token carries one byte: limits, initial counts, recipe amounts
MAX_TICKS = 1_000_000         # conversion_ticks, cooldown, freeze_duration
MAX_STEPS = 2**31 - 1         # max_steps (a C++ int)
ItemCount = Annotated[int, Field(ge=0, le=MAX_ITEM_COUNT)]
RecipeAmount = Annotated[int, Field(ge=1, le=MAX_ITEM_COUNT)]
Ticks = Annotated[int, Field(ge=0, le=MAX_TICKS)]


class _Strict(BaseModel):
    """Unknown keys are errors, so a misspelt YAML key never passes silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class WallConfig(_Strict):
    """A wall, or a block when `swappable` (agents with the swap action may trade places with it)."""

    kind: Literal["wall"] = "wall"
    type_id: Annotated[int, Field(ge=1, le=255)] = 1
    swappable: bool = False


class ConverterConfig(_Strict):
    """A converter: consumes `input_resources` at once, adds `output_resources` `conversion_ticks` later,
    then cools down for `cooldown` ticks. It starts only while it holds fewer than `max_output` output items."""

    kind: Literal["converter"] = "converter"
    type_id: Annotated[int, Field(ge=1, le=255)]
    input_resources: dict[str, RecipeAmount] = Field(default_factory=dict)
    output_resources: dict[str, RecipeAmount] = Field(default_factory=dict)
    max_output: ItemCount = 5
    conversion_ticks: Ticks = 1
    cooldown: Ticks = 0
    initial_resource_count: ItemCount = 0
    color: Annotated[int, Field(ge=0, le=255)] = 0

    @model_validator(mode="after")
    def _check_zero_time_cycle(self) -> "ConverterConfig":
        if (self.conversion_ticks == 0 and self.cooldown == 0 and self.input_resources
                and self.input_resources == self.output_resources):
            raise ValueError("conversion_ticks 0 with cooldown 0 needs outputs that differ from the inputs "
                             "(this converter would convert forever within one tick)")
        return self


ObjectConfig = Annotated[Union[WallConfig, ConverterConfig], Field(discriminator="kind")]


class ResourceLimitGroup(_Strict):
    """Items whose held counts share one limit (their sum may not exceed `limit`)."""

    items: list[str] = Field(min_length=1)
    limit: Annotated[int, Field(ge=0, le=65535)]


class AgentConfig(_Strict):
    """What every agent starts with and how it is rewarded."""

    default_resource_limit: ItemCount = 50
    """Items held per kind; at most 255, the largest count an inventory token can show (as in the original)."""
    resource_limits: dict[str, ItemCount] = Field(default_factory=lambda: {"heart": 255})
    shared_limits: list[ResourceLimitGroup] = Field(default_factory=list)
    initial_inventory: dict[str, ItemCount] = Field(default_factory=dict)
    """Given in item id order within each item's limit and the shared limits (what does not fit is dropped)."""
    rewards: dict[str, float] = Field(default_factory=lambda: {"heart": 1.0})
    """Reward weight per held item: score = sum_i min(count_i * weight_i, cap_i); reward = change of score."""
    reward_caps: dict[str, float] = Field(default_factory=dict)
    """Cap per item on its score contribution; items without a cap are uncapped."""
    freeze_duration: Ticks = 10
    action_failure_penalty: float = 0.0
    group_id: Annotated[int, Field(ge=0, le=255)] = 0


class ActionToggle(_Strict):
    enabled: bool = True


class AttackConfig(_Strict):
    """attack_0..attack_8: costs `consumed_resources` when it finds a target; `defense_resources` block it."""

    enabled: bool = True
    consumed_resources: dict[str, NonNegativeInt] = Field(default_factory=lambda: {"laser": 1})
    defense_resources: dict[str, NonNegativeInt] = Field(default_factory=lambda: {"armor": 1})


class ChangeGlyphConfig(_Strict):
    enabled: bool = False
    number_of_glyphs: Annotated[int, Field(ge=1, le=255)] = 4


class ActionsConfig(_Strict):
    """Which actions exist. The flat action list is built in this order:
    noop, move_north/south/west/east, put_items, get_items, attack_0..8, rotate_north/south/west/east,
    swap, change_glyph_0..K-1 (each group only when enabled)."""

    noop: ActionToggle = Field(default_factory=ActionToggle)
    move: ActionToggle = Field(default_factory=ActionToggle)
    put_items: ActionToggle = Field(default_factory=ActionToggle)
    get_items: ActionToggle = Field(default_factory=ActionToggle)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    rotate: ActionToggle = Field(default_factory=lambda: ActionToggle(enabled=False))
    swap: ActionToggle = Field(default_factory=lambda: ActionToggle(enabled=False))
    change_glyph: ChangeGlyphConfig = Field(default_factory=ChangeGlyphConfig)

    def flat_actions(self) -> list[tuple[str, str, int]]:
        """(name, kind, argument) of each flat action id. The engine runs `kind` (the field's name) with
        `argument`: the direction (north 0, south 1, west 2, east 3), the attack's target index or the glyph;
        `name` labels the action for users and stats."""
        dirs = ["north", "south", "west", "east"]
        groups = {"noop": [("noop", 0)], "move": [(f"move_{d}", i) for i, d in enumerate(dirs)],
                  "put_items": [("put_items", 0)], "get_items": [("get_items", 0)],
                  "attack": [(f"attack_{i}", i) for i in range(9)],
                  "rotate": [(f"rotate_{d}", i) for i, d in enumerate(dirs)], "swap": [("swap", 0)],
                  "change_glyph": [(f"change_glyph_{i}", i) for i in range(self.change_glyph.number_of_glyphs)]}
        return [(name, kind, arg) for kind, actions in groups.items() if getattr(self, kind).enabled
                for name, arg in actions]

    def action_names(self) -> list[str]:
        return [name for name, _, _ in self.flat_actions()]


# ASCII map characters (GAME.md). Values are object names in GameConfig.objects, or "agent"/"empty".
ASCII_LEGEND: dict[str, str] = {
    "#": "wall", "_": "altar", "m": "mine_red", "n": "generator_red", "S": "lasery", "o": "armory",
    "s": "block", "@": "agent", "A": "agent", ".": "empty", " ": "empty",
}


class AsciiMapBuilder(_Strict):
    """A hand-drawn map. Rows are strings of equal length; see ASCII_LEGEND for the characters.
    `legend` adds or overrides characters (value: an object name, "agent" or "empty")."""

    kind: Literal["ascii"] = "ascii"
    lines: list[str] = Field(min_length=1)
    legend: dict[str, str] = Field(default_factory=dict)

    def full_legend(self) -> dict[str, str]:
        return {**ASCII_LEGEND, **self.legend}

    @property
    def num_agents(self) -> int:
        legend = self.full_legend()
        return sum(1 for row in self.lines for ch in row if legend.get(ch) == "agent")


class ArenaMapBuilder(_Strict):
    """Random rooms: `rooms` = (rows, cols) of `room_size` square rooms with no walls between them,
    inside a wall border `border` cells thick. Agents are dealt to rooms in turn; every room gets
    `objects` (name -> count) at random empty cells. A fresh map is built from each episode's seed."""

    kind: Literal["arena"] = "arena"
    num_agents: PositiveInt = 24
    rooms: tuple[PositiveInt, PositiveInt] = (2, 2)
    room_size: PositiveInt = 25
    border: NonNegativeInt = 6
    objects: dict[str, NonNegativeInt] = Field(default_factory=lambda: {
        "wall": 10, "altar": 5, "mine_red": 10, "generator_red": 5, "lasery": 1, "armory": 1})


MapBuilder = Annotated[Union[AsciiMapBuilder, ArenaMapBuilder], Field(discriminator="kind")]


def default_objects() -> dict[str, WallConfig | ConverterConfig]:
    """The arena object set (GAME.md): walls, blocks, converters of every colour."""
    objects: dict[str, WallConfig | ConverterConfig] = {
        "wall": WallConfig(type_id=1),
        "block": WallConfig(type_id=14, swappable=True),
        "altar": ConverterConfig(type_id=8, input_resources={"battery_red": 3},
                                 output_resources={"heart": 1}, cooldown=10),
        "lasery": ConverterConfig(type_id=15, input_resources={"battery_red": 1, "ore_red": 2},
                                  output_resources={"laser": 1}, cooldown=10),
        "armory": ConverterConfig(type_id=16, input_resources={"ore_red": 3},
                                  output_resources={"armor": 1}, cooldown=10),
    }
    for i, colour in enumerate(["red", "blue", "green"]):
        objects[f"mine_{colour}"] = ConverterConfig(
            type_id=2 + i, output_resources={f"ore_{colour}": 1}, cooldown=50, color=i)
        objects[f"generator_{colour}"] = ConverterConfig(
            type_id=5 + i, input_resources={f"ore_{colour}": 1},
            output_resources={f"battery_{colour}": 1}, cooldown=25, color=i)
    return objects


class GameConfig(_Strict):
    """One MettaGrid game. Every field is validated here; `engine_spec()` hands it to C++."""

    max_steps: Annotated[int, Field(ge=0, le=MAX_STEPS)] = 1000
    """Episode length; 0 means episodes never end on their own."""
    episode_end: Literal["terminal", "truncation"] = "terminal"
    """How the max_steps limit is reported: as a termination (default, as in the original) or truncation."""
    random_first_episode_cut: bool = False
    """End each env's first episode at a random step (as a truncation) so that envs desynchronise."""
    obs_width: Annotated[int, Field(ge=1, le=15)] = 11
    obs_height: Annotated[int, Field(ge=1, le=15)] = 11
    num_observation_tokens: Annotated[int, Field(ge=1, le=4096)] = 200
    items: list[str] = Field(default_factory=lambda: list(DEFAULT_ITEMS), min_length=1, max_length=64)
    objects: dict[str, ObjectConfig] = Field(default_factory=default_objects)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    actions: ActionsConfig = Field(default_factory=ActionsConfig)
    map_builder: MapBuilder = Field(default_factory=ArenaMapBuilder)

    @property
    def num_agents(self) -> int:
        return self.map_builder.num_agents

    @property
    def action_names(self) -> list[str]:
        return self.actions.action_names()

    @property
    def feature_names(self) -> list[str]:
        """Observation feature name of each feature id (index = id)."""
        return [FEATURES[i][0] for i in range(INVENTORY_FEATURE_BASE)] + [f"inv:{it}" for it in self.items]

    @property
    def feature_normalizations(self) -> list[float]:
        """Divisor of each feature id's value, for models that scale observations."""
        return [FEATURES[i][1] for i in range(INVENTORY_FEATURE_BASE)] + [INVENTORY_NORMALIZATION] * len(self.items)

    @model_validator(mode="after")
    def _check_references(self) -> "GameConfig":
        items = set(self.items)
        if len(items) != len(self.items):
            raise ValueError(f"items: duplicate item names in {self.items}")

        def check_items(where: str, names) -> None:
            for name in names:
                if name not in items:
                    raise ValueError(f"{where}: unknown item '{name}' (known items: {', '.join(self.items)})")

        for name, obj in self.objects.items():
            if name in ("agent", "empty"):
                raise ValueError(f"objects: '{name}' is reserved and cannot name an object")
            if isinstance(obj, ConverterConfig):
                check_items(f"objects.{name}.input_resources", obj.input_resources)
                check_items(f"objects.{name}.output_resources", obj.output_resources)
        type_ids = [o.type_id for o in self.objects.values()]
        if len(set(type_ids)) != len(type_ids):
            raise ValueError("objects: two objects share a type_id; each object needs its own")
        a = self.agent
        check_items("agent.resource_limits", a.resource_limits)
        check_items("agent.initial_inventory", a.initial_inventory)
        check_items("agent.rewards", a.rewards)
        check_items("agent.reward_caps", a.reward_caps)
        for i, group in enumerate(a.shared_limits):
            check_items(f"agent.shared_limits[{i}].items", group.items)
        check_items("actions.attack.consumed_resources", self.actions.attack.consumed_resources)
        check_items("actions.attack.defense_resources", self.actions.attack.defense_resources)
        if not self.action_names:
            raise ValueError("actions: every action is disabled; enable at least one")
        self._check_map()
        return self

    def _check_map(self) -> None:
        mb = self.map_builder
        if isinstance(mb, AsciiMapBuilder):
            legend = mb.full_legend()
            width = len(mb.lines[0])
            for r, row in enumerate(mb.lines):
                if len(row) != width:
                    raise ValueError(f"map_builder.lines: row {r} has {len(row)} characters, row 0 has {width}")
                for c, ch in enumerate(row):
                    target = legend.get(ch)
                    if target is None:
                        raise ValueError(f"map_builder.lines: unknown map character '{ch}' at row {r}, column {c}")
                    if target not in ("agent", "empty") and target not in self.objects:
                        raise ValueError(f"map_builder.lines: character '{ch}' at row {r}, column {c} "
                                         f"names unknown object '{target}'")
            if mb.num_agents == 0:
                raise ValueError("map_builder.lines: the map has no agents ('@' or 'A')")
        else:
            for name in mb.objects:
                if name not in self.objects:
                    raise ValueError(f"map_builder.objects: unknown object '{name}' "
                                     f"(known objects: {', '.join(self.objects)})")
            rows, cols = mb.rooms
            per_room = -(-mb.num_agents // (rows * cols)) + sum(mb.objects.values())
            if per_room > mb.room_size * mb.room_size:
                raise ValueError(f"map_builder: {per_room} things per room do not fit in a "
                                 f"{mb.room_size}x{mb.room_size} room")

    def engine_spec(self) -> dict:
        """The plain dict the C++ binding reads: names resolved to ids, nothing left to look up.

        Keys (all ints/floats/bools/lists/dicts of those):
          max_steps, episode_truncates, random_first_episode_cut, obs_width, obs_height, num_tokens,
          num_items, item_names, action_names, actions [[kind, argument] per action name],
          feature_ids {feature name: id}, inventory_feature_base,
          objects: list of {name, type_id, is_wall, swappable, inputs [[item, n]], outputs [[item, n]],
                   max_output, conversion_ticks, cooldown, initial_resource_count, color},
          agent: {resource_limits [per item], shared_limits [[[items], limit]], initial_inventory [per item],
                  reward_weights [per item], reward_caps [per item, inf = none], freeze_duration,
                  action_failure_penalty, group_id},
          attack: {cost [[item, n]], defense [[item, n]]}, num_glyphs,
          map: {kind: "ascii", grid: [[object index | -1 empty | -2 agent per cell]]}
            or {kind: "arena", num_agents, rooms_r, rooms_c, room_size, border, wall_index,
                room_objects [[object index, count]]}
        """
        item_id = {name: i for i, name in enumerate(self.items)}
        object_names = list(self.objects)
        object_index = {name: i for i, name in enumerate(object_names)}

        def pairs(resources: dict[str, int]) -> list[list[int]]:
            return [[item_id[k], int(v)] for k, v in resources.items() if v > 0]

        objects = []
        for name in object_names:
            obj = self.objects[name]
            if isinstance(obj, WallConfig):
                objects.append(dict(name=name, type_id=obj.type_id, is_wall=True, swappable=obj.swappable,
                                    inputs=[], outputs=[], max_output=0, conversion_ticks=0, cooldown=0,
                                    initial_resource_count=0, color=0))
            else:
                objects.append(dict(name=name, type_id=obj.type_id, is_wall=False, swappable=False,
                                    inputs=pairs(obj.input_resources), outputs=pairs(obj.output_resources),
                                    max_output=obj.max_output, conversion_ticks=obj.conversion_ticks,
                                    cooldown=obj.cooldown, initial_resource_count=obj.initial_resource_count,
                                    color=obj.color))
        a = self.agent
        n = len(self.items)
        limits = [a.resource_limits.get(it, a.default_resource_limit) for it in self.items]
        agent = dict(
            resource_limits=limits,
            shared_limits=[[[item_id[i] for i in g.items], g.limit] for g in a.shared_limits],
            initial_inventory=[a.initial_inventory.get(it, 0) for it in self.items],
            reward_weights=[float(a.rewards.get(it, 0.0)) for it in self.items],
            reward_caps=[float(a.reward_caps.get(it, float("inf"))) for it in self.items],
            freeze_duration=a.freeze_duration,
            action_failure_penalty=float(a.action_failure_penalty),
            group_id=a.group_id,
        )
        mb = self.map_builder
        if isinstance(mb, AsciiMapBuilder):
            legend = mb.full_legend()
            code = {"empty": -1, "agent": -2, **object_index}
            grid = [[code[legend[ch]] for ch in row] for row in mb.lines]
            map_spec = dict(kind="ascii", grid=grid)
        else:
            map_spec = dict(kind="arena", num_agents=mb.num_agents, rooms_r=mb.rooms[0], rooms_c=mb.rooms[1],
                            room_size=mb.room_size, border=mb.border,
                            wall_index=object_index.get("wall", -1),
                            room_objects=[[object_index[k], v] for k, v in mb.objects.items() if v > 0])
        return dict(
            max_steps=self.max_steps,
            episode_truncates=self.episode_end == "truncation",
            random_first_episode_cut=self.random_first_episode_cut,
            obs_width=self.obs_width, obs_height=self.obs_height, num_tokens=self.num_observation_tokens,
            num_items=n, item_names=list(self.items), action_names=self.action_names,
            actions=[[kind, arg] for _, kind, arg in self.actions.flat_actions()],
            feature_ids={name: i for i, (name, _) in FEATURES.items()}, inventory_feature_base=INVENTORY_FEATURE_BASE,
            objects=objects, agent=agent,
            attack=dict(cost=pairs(self.actions.attack.consumed_resources),
                        defense=pairs(self.actions.attack.defense_resources)),
            num_glyphs=self.actions.change_glyph.number_of_glyphs if self.actions.change_glyph.enabled else 0,
            map=map_spec,
        )


def incompatibility(base: GameConfig, other: GameConfig) -> str:
    """Why games of `other` cannot share a batch (and a policy) with games of `base`, or "" if they can.

    They must have the same number of agents, action list, items and observation features and shape;
    everything else (map, objects, converters, rewards, limits, max_steps, attack costs) may differ."""
    checks = [("the agents per game (map_builder)", base.num_agents, other.num_agents),
              ("the actions", base.action_names, other.action_names),
              ("the items", base.items, other.items),
              ("the observation tokens (num_observation_tokens)", base.num_observation_tokens, other.num_observation_tokens),
              ("the observation window (obs_width x obs_height)", (base.obs_width, base.obs_height),
               (other.obs_width, other.obs_height))]
    for what, a, b in checks:
        if a != b:
            return f"{what} differ ({a} vs {b})"
    return ""
