"""Curricula: which game each finished game plays next, learnt from the scores of its episodes.

A `Task` is a game config with an id and a name. A `Curriculum` hands out tasks (`sample()`), hears
how each episode went (`update(task_id, score)`; the score is the episode's mean reward over its
agents), reports `stats()` for logging and keeps its whole state (RNG included) in `state_dict()`,
so a resumed run continues the same task sequence.

- `SingleTask`: one game (what a run without a curriculum plays).
- `RandomTasks`: a list of tasks drawn with fixed weights.
- `Bucketed`: tasks generated from value lists over config paths (`BucketedTasks`), drawn uniformly.
- `LearningProgress`: a bounded pool of active tasks from a generator, drawn by learning progress
  (METTA-SPEC 4.2): fast and slow EMAs of each task's score, progress = |fast - slow| after
  reweighting, standardised over the pool and passed through a sigmoid as sampling weights, plus a
  random-task rate; tasks that stop progressing are evicted and replaced by fresh ones.

`CurriculumConfig` is the same thing as plain, validated fields (YAML / the CLI / the Python API);
`CurriculumConfig.build(base_game, seed)` checks every task against the run's game before training
starts and returns the curriculum. `CurriculumGames` binds a curriculum to an `envs.MettaGrid`: it
starts each game that is about to reset on a sampled task and reports finished episodes.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Literal, Optional, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import GameConfig, incompatibility
from .presets import resolve_game

__all__ = ["Bucketed", "BucketedTasks", "Curriculum", "CurriculumConfig", "CurriculumGames", "LearningProgress",
           "RandomTasks", "SingleTask", "Task", "TaskList", "TaskSpec", "episode_score"]


@dataclass(frozen=True)
class Task:
    """A game to train on: `id` (stable within its curriculum), a readable `name` and the `game`."""

    id: int
    name: str
    game: GameConfig


def episode_score(episode: dict) -> float:
    """The score a curriculum hears for a finished episode: its mean reward over the agents."""
    return float(np.mean(episode["reward"]))


# ----------------------------------------------------------------------------------------------- task sources
class TaskList:
    """A fixed list of tasks (ids 0..n-1 are their positions)."""

    def __init__(self, tasks: Sequence[Task]) -> None:
        if not tasks:
            raise ValueError("a task list needs at least one task")
        for i, t in enumerate(tasks):
            if t.id != i:
                raise ValueError(f"task '{t.name}': id {t.id} should be its position {i} in the list")
        self.tasks = list(tasks)
        check_compatible([t.game for t in self.tasks], [t.name for t in self.tasks])

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def task(self, task_id: int) -> Task:
        return self.tasks[task_id]


def check_compatible(games: Sequence[GameConfig], names: Sequence[str]) -> None:
    """Every game must be able to share a batch with the first one: an error naming the task otherwise."""
    for game, name in zip(games[1:], names[1:]):
        why = incompatibility(games[0], game)
        if why:
            raise ValueError(f"task '{name}' cannot be trained with task '{names[0]}': {why}")


def _set_path(base: GameConfig, fields: dict, path: str, value: Any, where: str) -> None:
    """Set the dotted `path` in `fields` (the dump of `base`). Each segment must be a field of the config
    model it is in; a segment inside a name-keyed mapping (rewards, costs, objects...) may be a new key,
    which the validation of the whole config then accepts or refuses by name."""
    parts = path.split(".")
    obj: Any = base
    node: Any = fields
    for i, part in enumerate(parts):
        here = ".".join(parts[:i + 1])
        if isinstance(obj, BaseModel):
            if part not in type(obj).model_fields:
                raise ValueError(f"{where}: '{here}' does not exist in the game config")
        elif not isinstance(obj, dict):
            raise ValueError(f"{where}: '{'.'.join(parts[:i])}' is a value, not a section of the game config")
        if i == len(parts) - 1:
            node[part] = value
            return
        obj = getattr(obj, part) if isinstance(obj, BaseModel) else obj.get(part)
        if obj is None:
            raise ValueError(f"{where}: '{here}' does not exist in the game config")
        node = node[part]


class BucketedTasks:
    """Tasks from value lists over config paths: task `id` is one combination of the values (mixed radix,
    the first path varying slowest), applied over `base`.

    Args:
        base: the game every task starts from.
        buckets: dotted GameConfig path -> the values it takes, e.g.
            `{"agent.rewards.ore_red": [0, 0.1, 0.5], "actions.attack.consumed_resources.laser": [1, 100]}`.
    """

    def __init__(self, base: GameConfig, buckets: dict[str, Sequence[Any]], where: str = "curriculum.buckets") -> None:
        if not buckets:
            raise ValueError(f"{where}: give at least one path with its values")
        self.base = base
        self.paths = list(buckets)
        self.values = [list(v) for v in buckets.values()]
        self._fields = base.model_dump()
        for path, values in zip(self.paths, self.values):
            if not values:
                raise ValueError(f"{where}['{path}']: give at least one value")
            for value in values:  # each value alone over the base: a bad path or value fails here, named
                fields = copy.deepcopy(self._fields)
                _set_path(base, fields, path, value, f"{where}['{path}']")
                game = _validate(fields, f"{where}['{path}'] = {value!r}")
                why = incompatibility(base, game)
                if why:
                    raise ValueError(f"{where}['{path}'] = {value!r}: the task cannot be trained with the base "
                                     f"game: {why}")
        self.num_tasks = math.prod(len(v) for v in self.values)
        self._radix = [math.prod(len(v) for v in self.values[i + 1:]) for i in range(len(self.values))]

    def choice(self, task_id: int) -> list[int]:
        """Index of each path's value in task `task_id`."""
        if not 0 <= task_id < self.num_tasks:
            raise ValueError(f"task id {task_id} out of range [0, {self.num_tasks})")
        return [(task_id // r) % len(v) for r, v in zip(self._radix, self.values)]

    def task(self, task_id: int) -> Task:
        fields = copy.deepcopy(self._fields)
        parts = []
        for path, values, k in zip(self.paths, self.values, self.choice(task_id)):
            _set_path(self.base, fields, path, values[k], "curriculum.buckets")
            parts.append(f"{path}={values[k]}")
        name = ",".join(parts)
        return Task(task_id, name, _validate(fields, f"task '{name}'"))

    def bucket_labels(self, task_id: int) -> list[str]:
        """`<path>=<value>` of each path in task `task_id` (per-bucket logging)."""
        return [f"{p}={v[k]}" for p, v, k in zip(self.paths, self.values, self.choice(task_id))]


def _validate(fields: dict, where: str) -> GameConfig:
    try:
        return GameConfig.model_validate(fields)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'game'}: "
                             f"{err['msg'].removeprefix('Value error, ')}" for err in e.errors())
        raise ValueError(f"{where}: {problems}") from None


# ----------------------------------------------------------------------------------------------- curricula
class Curriculum(ABC):
    """Hands out tasks and learns from their scores. Subclasses keep all their state in `state_dict()`
    (plain Python values, loadable with `torch.load(weights_only=True)`)."""

    def __init__(self, source, seed: int = 0) -> None:
        self.source = source
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.num_sampled = 0
        self.num_updates = 0
        self._recent: dict[int, deque] = {}  # task id -> its last scores (stats)
        self._tasks: OrderedDict[int, Task] = OrderedDict()  # built tasks, most recently used last

    # -- the interface --------------------------------------------------------------------------------
    @abstractmethod
    def _draw(self) -> int:
        """The id of the next task."""

    def sample(self) -> Task:
        """The task the next episode plays."""
        self.num_sampled += 1
        return self.task(self._draw())

    def update(self, task_id: int, score: float) -> None:
        """An episode of `task_id` finished with `score`."""
        self.num_updates += 1
        task_id = int(task_id)
        if task_id not in self._recent and len(self._recent) >= 1024:
            self._recent.pop(next(iter(self._recent)))  # the task scored longest ago
        self._recent.setdefault(task_id, deque(maxlen=25)).append(float(score))

    def task(self, task_id: int) -> Task:
        """Task `task_id` (built once; the last 256 are cached)."""
        task = self._tasks.get(task_id)
        if task is None:
            task = self.source.task(task_id)
            self._tasks[task_id] = task
            if len(self._tasks) > 256:
                self._tasks.popitem(last=False)
        else:
            self._tasks.move_to_end(task_id)
        return task

    def weights(self) -> Optional[dict[int, float]]:
        """The current sampling probability of each task it may draw (None: too many to list)."""
        return None

    def stats(self) -> dict[str, float]:
        """`curriculum/*` figures: tasks sampled and scored so far, the entropy of the sampling weights,
        the mean recent score (last 25 episodes) per task name or, for bucketed tasks, per bucket value."""
        out = {"curriculum/tasks_sampled": float(self.num_sampled), "curriculum/episodes_scored": float(self.num_updates)}
        w = self.weights()
        if w:
            p = np.array([x for x in w.values() if x > 0])
            out["curriculum/sampling_entropy"] = float(-(p * np.log(p)).sum())
        per_label: dict[str, list[float]] = {}
        for task_id, scores in self._recent.items():
            for label in self._labels(task_id):
                per_label.setdefault(label, []).extend(scores)
        for label, scores in per_label.items():
            out[f"curriculum/score/{label}"] = float(np.mean(scores))
        return out

    def _labels(self, task_id: int) -> list[str]:
        if isinstance(self.source, BucketedTasks):
            return self.source.bucket_labels(task_id)
        return [self.task(task_id).name]

    # -- state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"rng": _rng_state(self.rng), "num_sampled": self.num_sampled, "num_updates": self.num_updates,
                "recent": {k: list(v) for k, v in self._recent.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = _rng_from_state(state["rng"])
        self.num_sampled = int(state["num_sampled"])
        self.num_updates = int(state["num_updates"])
        self._recent = {int(k): deque(v, maxlen=25) for k, v in state["recent"].items()}


def _rng_state(rng: np.random.Generator) -> dict:
    s = rng.bit_generator.state  # PCG64: 128-bit ints, stored as strings (no pickled numpy in the .ckpt)
    return {"state": str(s["state"]["state"]), "inc": str(s["state"]["inc"]), "has_uint32": int(s["has_uint32"]),
            "uinteger": int(s["uinteger"])}


def _rng_from_state(s: dict) -> dict:
    return {"bit_generator": "PCG64", "state": {"state": int(s["state"]), "inc": int(s["inc"])},
            "has_uint32": int(s["has_uint32"]), "uinteger": int(s["uinteger"])}


class SingleTask(Curriculum):
    """One game, every episode (a run without a curriculum)."""

    def __init__(self, game: GameConfig, name: str = "game", seed: int = 0) -> None:
        super().__init__(TaskList([Task(0, name, game)]), seed)

    def _draw(self) -> int:
        return 0

    def weights(self) -> dict[int, float]:
        return {0: 1.0}


class RandomTasks(Curriculum):
    """Tasks drawn independently with fixed `weights` (default: equal)."""

    def __init__(self, tasks: Sequence[Task] | TaskList, weights: Optional[Sequence[float]] = None, seed: int = 0) -> None:
        source = tasks if isinstance(tasks, TaskList) else TaskList(tasks)
        super().__init__(source, seed)
        w = np.ones(source.num_tasks) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (source.num_tasks,) or not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights: expected {source.num_tasks} non-negative finite numbers with a positive sum, "
                             f"got {list(weights) if weights is not None else None}")
        self.p = w / w.sum()

    def _draw(self) -> int:
        return int(self.rng.choice(len(self.p), p=self.p))

    def weights(self) -> dict[int, float]:
        return {i: float(p) for i, p in enumerate(self.p)}


class Bucketed(Curriculum):
    """Every combination of the buckets' values (a `BucketedTasks`) equally likely."""

    def __init__(self, tasks: BucketedTasks, seed: int = 0) -> None:
        super().__init__(tasks, seed)

    def _draw(self) -> int:
        return int(self.rng.integers(self.source.num_tasks))


class LearningProgress(Curriculum):
    """Learning-progress sampling over a bounded pool of active tasks (defaults: METTA-SPEC 4.2, the
    arena recipe's values).

    Each active task keeps its last `memory` scores; on every score its fast EMA moves towards their mean
    by `ema_timescale` and its slow EMA towards the fast one by `ema_timescale * 0.2`. Scores are divided
    by the largest absolute score seen so far (so they lie in [0, 1] as the original's success rates do)
    and reweighted, `p (1 - s) / (p + s (1 - 2p))` with s = `progress_smoothing`. Progress is
    |fast - slow|; a task with fewer than `sample_threshold` scores gets `exploration_bonus` on top.
    Tasks with progress are standardised over the pool, passed through a sigmoid and normalised into
    sampling weights (all equal when none has any). With probability `rand_task_rate` a task is drawn
    uniformly from the pool instead. Once every active task has `sample_threshold` scores, the one with
    the least progress is evicted for a fresh task from the generator; the state of up to
    `max_memory_tasks` evicted tasks is remembered in case the generator draws them again.
    """

    def __init__(self, tasks, seed: int = 0, num_active_tasks: int = 16, rand_task_rate: float = 0.25,
                 sample_threshold: int = 10, memory: int = 25, ema_timescale: float = 0.001,
                 exploration_bonus: float = 0.1, progress_smoothing: float = 0.05,
                 max_memory_tasks: int = 1000) -> None:
        super().__init__(tasks, seed)
        checks = {"num_active_tasks": num_active_tasks >= 1, "rand_task_rate": 0 <= rand_task_rate <= 1,
                  "sample_threshold": sample_threshold >= 1, "memory": memory >= 1,
                  "ema_timescale": 0 < ema_timescale <= 1, "exploration_bonus": exploration_bonus >= 0,
                  "progress_smoothing": 0 <= progress_smoothing < 0.5, "max_memory_tasks": max_memory_tasks >= 0}
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"LearningProgress: bad {name}={locals()[name]!r}")
        self.num_active_tasks = min(num_active_tasks, tasks.num_tasks)
        self.rand_task_rate, self.sample_threshold, self.memory = rand_task_rate, sample_threshold, memory
        self.ema_timescale, self.exploration_bonus = ema_timescale, exploration_bonus
        self.progress_smoothing, self.max_memory_tasks = progress_smoothing, max_memory_tasks
        self.scale = 0.0  # largest |score| seen
        self.evictions = 0
        # task id -> {"scores": [...], "fast": float | None, "slow": float | None, "n": scores heard}
        self.active: dict[int, dict] = {}
        self.remembered: OrderedDict[int, dict] = OrderedDict()
        while len(self.active) < self.num_active_tasks:
            self._admit()

    # -- pool --------------------------------------------------------------------------------------------
    def _admit(self) -> None:
        """A fresh task from the generator that is not active (uniform over the generator's ids)."""
        n = self.source.num_tasks
        for _ in range(64):
            task_id = int(self.rng.integers(n))
            if task_id not in self.active:
                break
        else:  # a small generator almost all active: the first free id
            task_id = next(i for i in range(n) if i not in self.active)
        self.task(task_id)  # build it now: a bad combination fails here, named
        self.active[task_id] = self.remembered.pop(task_id, None) or {"scores": [], "fast": None, "slow": None, "n": 0}

    def _evict_if_due(self) -> None:
        if self.num_active_tasks >= self.source.num_tasks:
            return  # nothing fresh to replace it with
        if any(s["n"] < self.sample_threshold for s in self.active.values()):
            return
        progress = self.progress()
        worst = min(progress, key=lambda k: (progress[k], k))
        self.remembered[worst] = self.active.pop(worst)
        while len(self.remembered) > self.max_memory_tasks:
            self.remembered.popitem(last=False)
        self.evictions += 1
        self._admit()

    # -- learning progress ---------------------------------------------------------------------------------
    def _reweight(self, p: float) -> float:
        s = self.progress_smoothing
        den = p + s * (1 - 2 * p)
        return p * (1 - s) / den if den > 0 else 0.0

    def progress(self) -> dict[int, float]:
        """Learning progress of each active task (with the exploration bonus)."""
        out = {}
        for task_id, s in self.active.items():
            lp = 0.0
            if s["fast"] is not None and self.scale > 0:
                f = min(max(s["fast"] / self.scale, 0.0), 1.0)
                w = min(max(s["slow"] / self.scale, 0.0), 1.0)
                lp = abs(self._reweight(f) - self._reweight(w))
            if s["n"] < self.sample_threshold:
                lp += self.exploration_bonus
            out[task_id] = lp
        return out

    def weights(self) -> dict[int, float]:
        """Sampling probability of each active task (random-task rate included)."""
        ids = list(self.active)
        progress = self.progress()
        lp = np.array([progress[i] for i in ids])
        positive = lp > 0
        dist = np.full(len(ids), 1.0 / len(ids))
        if positive.any():
            sub = lp[positive]
            std = sub.std()
            z = (sub - sub.mean()) / (std if std > 0 else 1.0)
            sig = 1.0 / (1.0 + np.exp(-z))
            dist = np.zeros(len(ids))
            dist[positive] = sig / sig.sum()
        dist = (1 - self.rand_task_rate) * dist + self.rand_task_rate / len(ids)
        return {i: float(p) for i, p in zip(ids, dist)}

    def _draw(self) -> int:
        w = self.weights()
        ids = list(w)
        p = np.array(list(w.values()))
        return ids[int(self.rng.choice(len(ids), p=p / p.sum()))]

    def update(self, task_id: int, score: float) -> None:
        super().update(task_id, score)
        s = self.active.get(int(task_id))
        if s is None:
            return  # evicted while its episode ran
        score = float(score)
        if not math.isfinite(score):
            return
        self.scale = max(self.scale, abs(score))
        s["scores"] = (s["scores"] + [score])[-self.memory:]
        s["n"] += 1
        mean = float(np.mean(s["scores"]))
        if s["fast"] is None:
            s["fast"] = s["slow"] = mean
        else:
            s["fast"] += self.ema_timescale * (mean - s["fast"])
            s["slow"] += self.ema_timescale * 0.2 * (s["fast"] - s["slow"])
        self._evict_if_due()

    def stats(self) -> dict[str, float]:
        out = super().stats()
        out["curriculum/pool_size"] = float(len(self.active))
        out["curriculum/evictions"] = float(self.evictions)
        progress = self.progress()
        out["curriculum/mean_progress"] = float(np.mean(list(progress.values())))
        return out

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        out.update(scale=self.scale, evictions=self.evictions,
                   active=[[k, copy.deepcopy(v)] for k, v in self.active.items()],
                   remembered=[[k, copy.deepcopy(v)] for k, v in self.remembered.items()])
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.scale, self.evictions = float(state["scale"]), int(state["evictions"])
        self.active = {int(k): copy.deepcopy(v) for k, v in state["active"]}
        self.remembered = OrderedDict((int(k), copy.deepcopy(v)) for k, v in state["remembered"])


# ----------------------------------------------------------------------------------------------- config
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskSpec(_Strict):
    """One task of a `random` curriculum: GameConfig fields merged over the base game, and its weight."""

    name: str
    overrides: dict[str, Any] = Field(default_factory=dict)
    weight: float = Field(default=1.0, ge=0)


class CurriculumConfig(_Strict):
    """A curriculum as plain fields (YAML `data.curriculum`, or `api.DataConfig.curriculum`).

    Args:
        kind: `single` (the run's game only), `random` (`tasks` with their weights), `bucketed` (every
            combination of `buckets` equally likely) or `learning_progress` (`buckets` sampled by learning
            progress; the remaining fields).
        tasks: for `random`: named GameConfig overrides over the run's game, with weights.
        buckets: for `bucketed` and `learning_progress`: dotted GameConfig path -> values, e.g.
            `agent.rewards.ore_red: [0, 0.1, 0.5, 0.9, 1.0]`.
        num_active_tasks, rand_task_rate, sample_threshold, memory, ema_timescale, exploration_bonus,
        progress_smoothing, max_memory_tasks: `LearningProgress`'s parameters (METTA-SPEC 4.2 defaults).
    """

    kind: Literal["single", "random", "bucketed", "learning_progress"] = "learning_progress"
    tasks: list[TaskSpec] = Field(default_factory=list)
    buckets: dict[str, list[Any]] = Field(default_factory=dict)
    num_active_tasks: int = Field(default=16, ge=1)
    rand_task_rate: float = Field(default=0.25, ge=0, le=1)
    sample_threshold: int = Field(default=10, ge=1)
    memory: int = Field(default=25, ge=1)
    ema_timescale: float = Field(default=0.001, gt=0, le=1)
    exploration_bonus: float = Field(default=0.1, ge=0)
    progress_smoothing: float = Field(default=0.05, ge=0, lt=0.5)
    max_memory_tasks: int = Field(default=1000, ge=0)

    def build(self, base: GameConfig, seed: int = 0, where: str = "data.curriculum") -> Curriculum:
        """The curriculum over `base` (the run's game), every task checked against it first: a bad path,
        a value of the wrong type or a task whose agents, actions or features differ raises a ValueError
        naming the path or the task."""
        if self.kind == "single":
            return SingleTask(base, seed=seed)
        if self.kind == "random":
            if not self.tasks:
                raise ValueError(f"{where}.tasks: a random curriculum needs at least one task")
            tasks = [Task(i, t.name, resolve_game(base, t.overrides, where=f"{where}.tasks[{i}] ('{t.name}')"))
                     for i, t in enumerate(self.tasks)]
            for t in tasks:
                why = incompatibility(base, t.game)
                if why:
                    raise ValueError(f"{where}.tasks: task '{t.name}' cannot be trained with the run's game: {why}")
            return RandomTasks(tasks, [t.weight for t in self.tasks], seed=seed)
        generator = BucketedTasks(base, self.buckets, where=f"{where}.buckets")
        if self.kind == "bucketed":
            return Bucketed(generator, seed=seed)
        return LearningProgress(generator, seed=seed, num_active_tasks=self.num_active_tasks,
                                rand_task_rate=self.rand_task_rate, sample_threshold=self.sample_threshold,
                                memory=self.memory, ema_timescale=self.ema_timescale,
                                exploration_bonus=self.exploration_bonus, progress_smoothing=self.progress_smoothing,
                                max_memory_tasks=self.max_memory_tasks)


# ----------------------------------------------------------------------------------------------- games
class CurriculumGames:
    """Plays a curriculum's tasks on an `envs.MettaGrid`: `start(games)` gives each of those games a
    sampled task for its next episode; `scored(episodes)` reports finished episodes (tagged with their
    task by the engine) to the curriculum. Task configs live in the engine's config slots, at most
    `max_slots` of them; the least recently used slot that no game runs or waits for is reused."""

    def __init__(self, curriculum: Curriculum, engine, max_slots: int = 64) -> None:
        self.curriculum = curriculum
        self.engine = engine
        self.max_slots = max(max_slots, engine.num_envs + 2)
        self._slot_of: OrderedDict[int, int] = OrderedDict()  # task id -> slot (>= 1), most recent last
        self._running = [-1] * engine.num_envs                # slot each game runs or will run next

    def _slot(self, task: Task) -> int:
        slot = self._slot_of.get(task.id)
        if slot is not None:
            self._slot_of.move_to_end(task.id)
            return slot
        if self.engine.num_configs < self.max_slots:
            slot = self.engine.add_config(task.game)
        else:
            busy = set(self._running)
            victim = next(t for t, s in self._slot_of.items() if s not in busy)
            slot = self._slot_of.pop(victim)
            self.engine.set_config(slot, task.game)
        self._slot_of[task.id] = slot
        return slot

    def start(self, games) -> None:
        """Sample the next task of each game in `games` (indices, in order) and queue it for its reset."""
        for g in games:
            task = self.curriculum.sample()
            slot = self._slot(task)
            self._running[int(g)] = slot
            self.engine.set_next_config(int(g), slot, task.id)

    def scored(self, episodes: list[dict]) -> None:
        for ep in episodes:
            self.curriculum.update(int(ep["task"]), episode_score(ep))
