"""Train without YAML, or step the training loop yourself: typed configs, `train`, and the exposed phases.

    from metta_lightning import api

    config = api.TrainerConfig(game="arena_basic_easy_shaped", max_epochs=10,
                               ppo=api.PPOConfig(clip_coef=0.2), optimizer=api.OptimizerConfig(learning_rate=1e-3))
    result = api.train(config)                      # the same Trainer, callbacks and loggers as `fit`

    env = api.Environment(game="arena_basic_easy_shaped", num_envs=8, seed=0)
    policy = api.make_policy("Fast", env)
    training = api.TrainingComponents.create(env, policy, config)
    rollout = training.rollout()                    # 1. collect
    training.compute_advantages()                   # 2. advantages
    for minibatch in training.minibatches():        # 3. whole BPTT segments
        training.train_minibatch(minibatch)         # 4. loss and its metrics
        training.optimize_step()                    # 5. backward, clip, step

One source of truth: the config classes are derived from the constructors the CLI builds (`PPOModule`,
`RolloutDataModule`, `PolicyCheckpoint`, `EvaluateCallback`, ...): every field has the constructor's type,
default and documentation, so the YAML configs and these classes cannot drift. `TrainerConfig.to_cli()`
gives the LightningCLI config `fit` would read; `TrainerConfig.from_yaml(path)` reads a YAML config back.
"""

from __future__ import annotations

import inspect
import os
import typing
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Optional, Union

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from callbacks.checkpoint import PolicyCheckpoint
from callbacks.evaluate import EvaluateCallback
from callbacks.gradients import GradientStats, gradient_stats
from callbacks.monitor import SystemMonitor
from callbacks.profiler import TorchProfiler
from callbacks.upload import UploadCallback
from envs.config import GameConfig
from envs.curriculum import Curriculum, CurriculumConfig
from envs.info import EnvInfo

from envs.presets import resolve_game

from .data import RolloutActor, RolloutDataModule
from .module import PPOModule
from .training import Minibatch, PhaseOrderError, PPOHyperparameters, PPOUpdate, Rollout, optimizer_step

__all__ = ["CheckpointConfig", "ConfigError", "CurriculumConfig", "Environment", "EvaluationConfig", "LoggingConfig", "OptimizerConfig",
           "PPOConfig", "PhaseOrderError", "PolicyConfig", "RolloutConfig", "TrainResult", "TrainerConfig",
           "TrainingComponents", "make_policy", "train"]


class ConfigError(ValueError):
    """A config field that does not validate; the message names its path (`ppo.clip_coef: ...`)."""


def _from_signature(name: str, cls: type, fields: Optional[list[str]] = None, exclude: tuple[str, ...] = (),
                    doc: str = "") -> type[BaseModel]:
    """A pydantic model whose fields are `cls.__init__`'s parameters (types, defaults and the docstring's
    `Args:` descriptions), so a config class can never disagree with the constructor it configures."""
    from docstring_parser import parse

    hints = typing.get_type_hints(cls.__init__)
    described = {p.arg_name: (p.description or "").replace("\n", " ") for p in parse(cls.__doc__ or "").params}
    spec: dict[str, Any] = {}
    for pname, param in inspect.signature(cls.__init__).parameters.items():
        if pname == "self" or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL) or pname in exclude:
            continue
        if fields is not None and pname not in fields:
            continue
        default = param.default if param.default is not inspect.Parameter.empty else ...
        spec[pname] = (hints.get(pname, Any), Field(default, description=described.get(pname)))
    model = create_model(name, __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True), **spec)
    model.__doc__ = doc or f"The arguments of `{cls.__module__}.{cls.__qualname__}`."
    return model


_PPO_FIELDS = ["clip_coef", "ent_coef", "vf_coef", "vf_clip_coef", "gamma", "gae_lambda", "vtrace_rho_clip",
               "vtrace_c_clip", "norm_adv", "max_grad_norm", "bptt_horizon", "minibatch_size", "update_epochs",
               "target_kl", "losses", "prio_alpha", "prio_beta0",
               "prio_beta_agent_steps"]
_OPTIMIZER_FIELDS = ["learning_rate", "adam_eps", "adam_betas", "lr_schedule", "lr_schedule_agent_steps", "lr_min",
                     "optimizer_type", "weight_decay", "muon_momentum", "muon_exclude"]

PPOConfig = _from_signature("PPOConfig", PPOModule, _PPO_FIELDS, doc="PPO hyperparameters (`PPOModule` arguments).")
OptimizerConfig = _from_signature("OptimizerConfig", PPOModule, _OPTIMIZER_FIELDS,
                                  doc="Adam and the learning-rate schedule (`PPOModule` arguments).")
RolloutConfig = _from_signature("RolloutConfig", RolloutDataModule, exclude=("game", "game_overrides", "curriculum"),
                                doc="Games stepped together and rollout sizes (`RolloutDataModule` arguments).")
CheckpointConfig = _from_signature("CheckpointConfig", PolicyCheckpoint,
                                   doc="Policy artifacts and resumable states (`callbacks.PolicyCheckpoint`).")
EvaluationConfig = _from_signature("EvaluationConfig", EvaluateCallback,
                                   doc="Evaluation during training (`callbacks.EvaluateCallback`).")
UploadConfig = _from_signature("UploadConfig", UploadCallback, doc="Copies to a bucket (`callbacks.UploadCallback`).")
MonitorConfig = _from_signature("MonitorConfig", SystemMonitor, doc="System monitor (`callbacks.SystemMonitor`).")
GradientStatsConfig = _from_signature("GradientStatsConfig", GradientStats,
                                      doc="Gradient statistics (`callbacks.GradientStats`).")
ProfilerConfig = _from_signature("ProfilerConfig", TorchProfiler, doc="torch.profiler traces (`callbacks.TorchProfiler`).")


class PolicyConfig(BaseModel):
    """The policy class (`models.Fast`, or a short name of one in `models`) and its constructor arguments."""

    model_config = ConfigDict(extra="forbid")
    class_path: str = Field("models.Fast", description="import path of a `models.Policy` subclass")
    init_args: dict[str, Any] = Field(default_factory=dict, description="its arguments besides env_info")

    def resolved_class_path(self) -> str:
        return self.class_path if "." in self.class_path else f"models.{self.class_path}"


class LoggingConfig(BaseModel):
    """Where metrics go: W&B (offline unless `WANDB_MODE`/`WANDB_API_KEY` say otherwise), CSV, or nowhere."""

    model_config = ConfigDict(extra="forbid")
    logger: Literal["wandb", "csv", "none"] = Field("wandb", description="the logger")
    save_dir: str = Field("train_dir", description="folder the logger writes under")
    project: str = Field("metta", description="W&B project")
    name: Optional[str] = Field(None, description="CSV logger folder name / W&B run name (default: the run)")


class TrainerConfig(BaseModel):
    """Everything `fit` needs, typed. Defaults equal the CLI's (`fit --print_config` without a config file)."""

    model_config = ConfigDict(extra="forbid")
    run: Optional[str] = Field(None, description="run name: the run folder is $METTA_DATA_DIR/<run>/ (default: "
                                                 "the logger's name, else 'run')")
    seed: int = Field(0, description="seed_everything")
    game: Union[str, dict[str, Any]] = Field("arena_basic_easy_shaped",
                                             description="a preset name or a whole game as GameConfig fields")
    game_overrides: Optional[dict[str, Any]] = Field(None, description="GameConfig fields merged over the game")
    curriculum: Optional[CurriculumConfig] = Field(None, description="tasks over the game that finished games are "
                                                                     "reset into (`envs.curriculum`); None: the game only")
    policy: Optional[PolicyConfig] = Field(None, description="None: `models.Fast` with its defaults")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    checkpoint: Optional[CheckpointConfig] = Field(None, description="None: no checkpoints")
    evaluation: Optional[EvaluationConfig] = Field(None, description="None: no evaluation during training")
    upload: Optional[UploadConfig] = Field(None, description="None: nothing copied to a bucket")
    logging: Optional[LoggingConfig] = Field(None, description="None: the CLI's default, W&B (offline unless "
                                                                    "configured) under train_dir")
    log_every_n_steps: Optional[int] = Field(None, ge=1, description="log every this many rollouts (None: "
                                                                     "Lightning's default, 50)")
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    grad_stats: GradientStatsConfig = Field(default_factory=GradientStatsConfig)
    profiler: ProfilerConfig = Field(default_factory=ProfilerConfig)
    max_epochs: Optional[int] = Field(None, description="stop after this many epochs (None: Lightning's default)")
    max_time: Optional[str] = Field(None, description="stop after DD:HH:MM:SS of training, all segments counted")
    accelerator: str = Field("auto", description="cpu, gpu, auto, ...")
    devices: Union[int, str, list[int]] = Field("auto", description="devices per node")
    num_nodes: int = Field(1, description="nodes")
    strategy: Union[str, dict[str, Any]] = Field("auto", description="a Lightning strategy (ddp, ...)")
    precision: Optional[str] = Field(None, description="Lightning precision (None: 32-bit)")
    trainer_extra: dict[str, Any] = Field(default_factory=dict,
                                          description="further `Trainer` arguments, as in YAML's `trainer:`")

    @classmethod
    def parse(cls, fields: dict[str, Any]) -> "TrainerConfig":
        """Validate a dict; a bad field raises `ConfigError` naming its path (`ppo.clip_coef: ...`)."""
        try:
            return cls.model_validate(fields)
        except ValidationError as e:
            raise ConfigError("; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                                        for err in e.errors())) from None

    # -- the LightningCLI config -------------------------------------------------------------------
    def to_cli(self) -> dict[str, Any]:
        """The config `fit` reads (what `configs/*.yaml` hold), for `MettaCLI`."""
        callbacks = []
        if self.checkpoint is not None:
            callbacks.append({"class_path": "callbacks.PolicyCheckpoint", "init_args": _set(self.checkpoint)})
        if self.evaluation is not None:
            callbacks.append({"class_path": "callbacks.EvaluateCallback", "init_args": _set(self.evaluation)})
        if self.upload is not None:
            callbacks.append({"class_path": "callbacks.UploadCallback", "init_args": _set(self.upload)})
        log = self.logging
        if log is None:
            logger: Any = None
        elif log.logger == "wandb":
            logger = {"class_path": "metta_lightning.loggers.WandbLogger",
                           "init_args": {"project": log.project, "save_dir": log.save_dir,
                                         **({"name": log.name} if log.name else {})}}
        elif log.logger == "csv":
            logger = {"class_path": "lightning.pytorch.loggers.CSVLogger",
                      "init_args": {"save_dir": log.save_dir, "name": log.name or self.run or "lightning_logs"}}
        else:
            logger = False
        trainer = {"accelerator": self.accelerator, "devices": self.devices, "num_nodes": self.num_nodes,
                   "strategy": self.strategy, **self.trainer_extra}
        if logger is not None:
            trainer["logger"] = logger
        for key in ("max_epochs", "max_time", "precision", "log_every_n_steps"):
            if getattr(self, key) is not None:
                trainer[key] = getattr(self, key)
        if callbacks:
            trainer["callbacks"] = callbacks
        data = {"game": self.game, **_set(self.rollout)}
        if self.game_overrides:
            data["game_overrides"] = self.game_overrides
        if self.curriculum is not None:
            data["curriculum"] = self.curriculum.model_dump()
        model = {**_set(self.ppo), **_set(self.optimizer)}
        if self.policy is not None:
            model["policy"] = {"class_path": self.policy.resolved_class_path(), "init_args": dict(self.policy.init_args)}
        out = {"seed_everything": self.seed, "trainer": trainer, "model": model, "data": data,
               "monitor": _set(self.monitor), "grad_stats": _set(self.grad_stats), "profiler": _set(self.profiler)}
        if self.run is not None:
            out["run"] = self.run
        return out

    @classmethod
    def from_cli(cls, cfg: dict[str, Any]) -> "TrainerConfig":
        """The inverse of `to_cli`, for a YAML config of `fit` (unknown keys raise `ConfigError`)."""
        cfg = dict(cfg)
        trainer = dict(cfg.pop("trainer", None) or {})
        model = dict(cfg.pop("model", None) or {})
        data = dict(cfg.pop("data", None) or {})
        fields: dict[str, Any] = {}
        if "seed_everything" in cfg:
            fields["seed"] = cfg.pop("seed_everything")
        for key in ("run", "monitor", "grad_stats", "profiler"):
            if key in cfg:
                fields[key] = cfg.pop(key) or {}
        cfg.pop("logger_run_id", None)
        if cfg:
            raise ConfigError(f"unknown top-level keys {sorted(cfg)}")
        policy = model.pop("policy", None)
        if isinstance(policy, str):
            policy = {"class_path": policy}
        if policy is not None:
            fields["policy"] = {"class_path": policy.get("class_path", "models.Fast"),
                                "init_args": dict(policy.get("init_args") or {})}
        fields["ppo"] = {k: model.pop(k) for k in list(model) if k in _PPO_FIELDS}
        fields["optimizer"] = {k: model.pop(k) for k in list(model) if k in _OPTIMIZER_FIELDS}
        model.pop("env_info", None)
        if model:
            raise ConfigError(f"model: unknown keys {sorted(model)}")
        for key in ("game", "game_overrides", "curriculum"):
            if key in data:
                fields[key] = data.pop(key)
        data.pop("env_info", None)
        fields["rollout"] = data
        callbacks = trainer.pop("callbacks", None) or []
        for cb in callbacks if isinstance(callbacks, list) else [callbacks]:
            name = cb.get("class_path", "").rsplit(".", 1)[-1]
            key = {"PolicyCheckpoint": "checkpoint", "EvaluateCallback": "evaluation", "UploadCallback": "upload"}.get(name)
            if key is None:
                raise ConfigError(f"trainer.callbacks: {cb.get('class_path')!r} has no TrainerConfig field")
            fields[key] = dict(cb.get("init_args") or {})
        if "logger" in trainer:
            logger = trainer.pop("logger")
            if logger in (False, None):
                fields["logging"] = {"logger": "none"}
            elif isinstance(logger, dict) and logger.get("class_path", "").rsplit(".", 1)[-1] in ("CSVLogger", "WandbLogger"):
                args = dict(logger.get("init_args") or {})
                kind = "csv" if logger["class_path"].endswith("CSVLogger") else "wandb"
                fields["logging"] = {"logger": kind, **{k: args[k] for k in ("save_dir", "project", "name") if k in args}}
            else:
                trainer["logger"] = logger  # any other logger goes through as it is
        for key in ("max_epochs", "max_time", "accelerator", "devices", "num_nodes", "strategy", "precision",
                    "log_every_n_steps"):
            if key in trainer:
                fields[key] = trainer.pop(key)
        fields["trainer_extra"] = trainer
        return cls.parse(fields)

    @classmethod
    def from_yaml(cls, path: str) -> "TrainerConfig":
        with open(path) as f:
            return cls.from_cli(yaml.safe_load(f) or {})


def _set(model: BaseModel) -> dict[str, Any]:
    """The fields of a derived config as plain values (tuples as lists, as YAML has them)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in model.model_dump().items()}


# ---------------------------------------------------------------------------------------------- train

@dataclass
class TrainResult:
    """What `train` returns: the run's folder (`run_folder.RunFolder`), its name, the metrics logged last,
    the agent-steps trained and the trained policy."""

    run_dir: str
    run: str
    metrics: dict[str, float]
    agent_steps: int
    policy: torch.nn.Module


def train(config: TrainerConfig) -> TrainResult:
    """Run `fit` with `config`: the very `Trainer` the CLI builds (callbacks, loggers, strategies)."""
    from .cli import main

    from .run_folder import RunFolder

    cli = main(["fit", "--config", _write_cli_config(config)])
    folder = RunFolder.of(cli.trainer)
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if v.numel() == 1}
    for cb in cli.trainer.callbacks:  # evaluation metrics go straight to the loggers; add the last ones
        if isinstance(cb, EvaluateCallback):
            metrics.update(cb.last_metrics)
    return TrainResult(run_dir=folder.root, run=folder.name, metrics=metrics,
                       agent_steps=int(cli.model.agent_steps), policy=cli.model.policy)


def _write_cli_config(config: TrainerConfig) -> str:
    """The config as a YAML file `fit --config` reads (kept beside the logs: what ran is on disk)."""
    import tempfile

    folder = os.path.join(config.logging.save_dir if config.logging else "train_dir", "api_configs")
    os.makedirs(folder, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=f"{config.run or 'run'}-", suffix=".yaml", dir=folder)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(config.to_cli(), f, sort_keys=False)
    return path


# ---------------------------------------------------------------------------------------------- components

class Environment:
    """Batched MettaGrid games for the API: a preset or game config, or a quick arena by size.

        Environment(game="arena_basic_easy_shaped", num_envs=8, seed=0)
        Environment(num_agents=4, width=32, height=32)   # one room of 32 x 32 (inside the border)

    Args:
        game: a preset name, GameConfig fields or a GameConfig.
        num_envs: games stepped together.
        seed: seed of the games.
        game_overrides: GameConfig fields merged over `game`.
        num_agents, width, height: the convenience form: an arena with one room of `width` x `height` and
            `num_agents` agents (objects scaled to the room's area); the game defaults to the easy, shaped arena.
        device: device of the env's tensors.
        curriculum: tasks over `game` that finished games are reset into: a `CurriculumConfig` (built and
            checked against the game here, seeded with `seed`), its fields as a dict, or a built
            `envs.curriculum.Curriculum`. None: the game only.
    """

    def __init__(self, game: str | dict | GameConfig = "arena_basic_easy_shaped", num_envs: int = 4, seed: int = 0,
                 game_overrides: Optional[dict] = None, num_agents: Optional[int] = None, width: Optional[int] = None,
                 height: Optional[int] = None, device: str = "cpu",
                 curriculum: CurriculumConfig | dict | Curriculum | None = None) -> None:
        overrides = dict(game_overrides or {})
        if num_agents is not None or width is not None or height is not None:
            overrides = {**_small_arena(num_agents or 4, width or 25, height or 25), **overrides}
        self.game = resolve_game(game, overrides or None, where="game")
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs, self.seed, self.device = num_envs, seed, device
        self.env_info = EnvInfo.from_config(self.game)
        if curriculum is None or isinstance(curriculum, Curriculum):
            self.curriculum = curriculum
        else:
            self.curriculum = CurriculumConfig.model_validate(curriculum).build(self.game, seed=seed,
                                                                                where="curriculum")

    @property
    def num_rows(self) -> int:
        """Agents stepped together (rows of a rollout)."""
        return self.num_envs * self.env_info.num_agents

    def make_torchrl_env(self, seed: Optional[int] = None):
        from envs.torchrl_env import MettaGridEnv

        return MettaGridEnv(self.game, num_envs=self.num_envs, seed=self.seed if seed is None else seed,
                            device=self.device, curriculum=self.curriculum)


def _small_arena(num_agents: int, width: int, height: int) -> dict:
    area = width * height
    scale = max(1, round(area / 625))  # the standard room is 25 x 25
    return {"map_builder": {"kind": "arena", "num_agents": num_agents, "rooms": [1, 1], "room_size": max(width, height),
                            "border": 1, "objects": {"wall": 4 * scale, "altar": scale, "mine_red": 2 * scale,
                                                     "generator_red": scale}}}


def make_policy(name: str, env: Environment | EnvInfo, **init_args: Any) -> torch.nn.Module:
    """`models.<name>` (or a full class path) built for `env`, with `init_args`."""
    from models.base import build_policy

    info = env.env_info if isinstance(env, Environment) else env
    class_path = PolicyConfig(class_path=name).resolved_class_path()
    try:
        return build_policy({"class_path": class_path, "init_args": init_args}, info)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"unknown policy {name!r} ({e}); e.g. Fast, FeedForward or a class path") from None


class TrainingComponents:
    """The pieces `fit` runs, exposed one phase at a time (see the module doc); build with `create`.

    Attributes: `env`, `policy`, `optimizer`, `config`, `actor` (acting on the collector), `update` (the
    current rollout's `training.PPOUpdate`), `agent_steps`, `system_monitor` (a `callbacks.SystemMonitor`;
    `sample()` returns its metrics).
    """

    def __init__(self, env: Environment, policy: torch.nn.Module, config: TrainerConfig) -> None:
        self.env, self.policy, self.config = env, policy, config
        ppo, opt = config.ppo, config.optimizer
        self.hyperparameters = PPOHyperparameters(**{k: getattr(ppo, k) for k in
                                                     PPOHyperparameters.__dataclass_fields__})
        self.horizon = config.rollout.horizon
        from . import ppo as ppo_math

        ppo_math.validate_sizes(env.num_rows, self.horizon, ppo.bptt_horizon, ppo.minibatch_size)
        from .losses import build_losses
        from .optimizers import build_optimizers

        self.losses = build_losses(ppo.losses, env.env_info, policy, ppo.prio_alpha)  # `model.losses`
        self.optimizers = build_optimizers(policy, self.losses.modules.parameters(), opt.optimizer_type,
                                           opt.learning_rate, tuple(opt.adam_betas), opt.adam_eps, opt.weight_decay,
                                           env.env_info.num_actions, opt.muon_momentum, opt.muon_exclude)
        self.optimizer = self.optimizers[-1]  # Adam (with Muon: the one for the non-matrix parameters)
        if len(self.optimizers) == 1:
            self.optimizer = self.optimizers[0]
        self.actor = RolloutActor(policy)
        self.system_monitor = SystemMonitor(**_set(config.monitor))
        self.agent_steps = 0
        self.update: Optional[PPOUpdate] = None
        self._collector = None
        self._iterator: Optional[Iterator] = None
        self._torchrl_env = None
        self._loss: Optional[torch.Tensor] = None

    @classmethod
    def create(cls, env: Environment, policy: torch.nn.Module, config: Optional[TrainerConfig] = None
               ) -> "TrainingComponents":
        """Components for `policy` on `env` with `config`'s hyperparameters (defaults: the CLI's)."""
        return cls(env, policy, config or TrainerConfig())

    # -- 1. collect --------------------------------------------------------------------------------
    def rollout(self) -> Rollout:
        """Collect one rollout `[rows, horizon]` with the current weights (the collector `fit` uses)."""
        import time

        from .data import make_collector

        if self._iterator is None:
            self._torchrl_env = self.env.make_torchrl_env()
            self._collector = make_collector(self._torchrl_env, self.actor, self.env.num_rows * self.horizon,
                                             next(self.policy.parameters()).device)
            self._iterator = iter(self._collector)
        start = time.perf_counter()
        td = next(self._iterator)
        rollout = Rollout(td, episodes=self._torchrl_env.episode_stats(), seconds=time.perf_counter() - start,
                          timings=self.actor.timer.pop())
        self.update = PPOUpdate(self.policy, rollout, self.hyperparameters, losses=self.losses,
                                agent_steps=self.agent_steps)
        self._loss = None
        self.agent_steps += rollout.agent_steps
        return rollout

    # -- 2-5. the update -------------------------------------------------------------------------------
    def _current(self, what: str) -> PPOUpdate:
        if self.update is None:
            raise PhaseOrderError(f"{what} needs a rollout: call rollout() first")
        return self.update

    def compute_advantages(self) -> torch.Tensor:
        """GAE / V-trace advantages `[rows, horizon]` of the last rollout."""
        return self._current("compute_advantages()").compute_advantages()

    def minibatches(self) -> Iterator[Minibatch]:
        """`update_epochs` shuffled passes of whole BPTT segments (needs `compute_advantages()`)."""
        return self._current("minibatches()").minibatches()

    def train_minibatch(self, minibatch: Minibatch) -> torch.Tensor:
        """The PPO loss of one minibatch (kept for `optimize_step`)."""
        self._loss = self._current("train_minibatch()").loss(minibatch)
        return self._loss

    def optimize_step(self) -> None:
        """Backpropagate the last `train_minibatch` loss, clip the gradient norm, step the optimizer."""
        if self._loss is None:
            raise PhaseOrderError("optimize_step() needs a loss: call train_minibatch(minibatch) first")
        optimizer_step(self.policy, self.optimizers, self._loss, self.config.ppo.max_grad_norm)
        self._loss = None

    def metrics(self) -> dict[str, float]:
        """Mean losses over the last rollout's minibatches, and the explained variance."""
        return self._current("metrics()").metrics()

    def gradient_stats(self, per_layer: bool = False) -> dict[str, float]:
        """`grad/*` statistics of the gradients the policy holds now (after `optimize_step`)."""
        return gradient_stats(self.policy, per_layer=per_layer)

    # -- evaluation and checkpoints ------------------------------------------------------------------
    def evaluate(self, suite: str | dict | None = None, db_uri: Optional[str] = None,
                 replay_dir: Optional[str] = None, replay_episodes: int = 0, name: str = "api", episodes: int = 8):
        """Play `suite` (a suite name, a simulation, a YAML file or a suite dict; None: `episodes` episodes of
        the training game itself, as the suite `train`) with a copy of the current policy in eval mode.
        Episodes go to the DuckDB database `db_uri` if given. Returns the `simulation.SuiteResult`
        (`.log_dict("eval")` gives the eval/* metrics)."""
        import copy

        from .simulation import PolicyHandle, run_suite
        from .stats_db import StatsDB

        if suite is None:
            suite = {"name": "train", "simulations": {"game": {"game": self.env.game.model_dump(),
                                                               "num_episodes": episodes}}}

        handle = PolicyHandle(copy.deepcopy(self.policy).eval(), key=name, version=self.agent_steps)
        if db_uri is None:
            return run_suite(handle, suite, replay_dir=replay_dir, replay_episodes=replay_episodes)
        with StatsDB(db_uri) as db:
            return run_suite(handle, suite, db=db, replay_dir=replay_dir, replay_episodes=replay_episodes)

    def save_checkpoint(self, uri: str) -> str:
        """`<...>.mpt`: the policy artifact `fit` writes; `<...>.ckpt`: a training state in `fit`'s format
        (weights under `policy.`, the optimizer state, `agent_steps`), sealed like `fit`'s."""
        from . import checkpoint as ck
        from .checkpoint_uris import ARTIFACT_SUFFIX

        if uri.endswith(ARTIFACT_SUFFIX):
            return ck.save_policy(self.policy, self.env.env_info, uri, agent_steps=self.agent_steps)
        if not uri.endswith(".ckpt"):
            raise ck.CheckpointError(f"{uri}: expected a policy artifact (.mpt) or a training state (.ckpt)")
        import io

        weights = {f"policy.{k}": v for k, v in self.policy.state_dict().items()}
        weights.update({f"loss_modules.{k}": v for k, v in self.losses.modules.state_dict().items()})
        state = {"state_dict": weights,
                 "optimizer_states": [o.state_dict() for o in self.optimizers], "agent_steps": self.agent_steps,
                 "hyper_parameters": {"policy": {"class_path": f"{type(self.policy).__module__}."
                                                               f"{type(self.policy).__qualname__}",
                                                 "init_args": dict(self.policy.init_args)}}}
        buf = io.BytesIO()
        torch.save(state, buf)
        return ck.write_bytes_atomic(uri, ck.seal(buf.getvalue()))

    def load_checkpoint(self, uri: str) -> None:
        """Load weights from an artifact (`.mpt`), or weights, optimizer state and `agent_steps` from a
        training state (`.ckpt`, `fit`'s or `save_checkpoint`'s)."""
        from . import checkpoint as ck
        from .checkpoint_uris import resolve_uri

        if uri.endswith(".ckpt"):
            res = resolve_uri(uri, suffix=".ckpt")
            data = ck.read_bytes(res)
            if ck.seal_status(data) is False:
                raise ck.CheckpointError(f"{uri}: training state is corrupted (its SHA-256 does not match)")
            import io

            try:
                state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
                weights = {k[len("policy."):]: v for k, v in state["state_dict"].items() if k.startswith("policy.")}
                self.policy.load_state_dict(weights)
                heads = {k[len("loss_modules."):]: v for k, v in state["state_dict"].items()
                         if k.startswith("loss_modules.")}
                self.losses.modules.load_state_dict(heads)
                for o, o_state in zip(self.optimizers, state["optimizer_states"], strict=True):
                    o.load_state_dict(o_state)
            except Exception as e:  # noqa: BLE001
                raise ck.CheckpointError(f"{uri}: cannot load this training state ({type(e).__name__}: {e})") from None
            self.agent_steps = int(state.get("agent_steps", 0))
            return
        art = ck.read_artifact(uri)
        try:
            self.policy.load_state_dict(art.state_dict)
        except RuntimeError as e:
            raise ck.CheckpointError(f"{uri}: weights do not fit {type(self.policy).__name__}: {e}") from None

    def close(self) -> None:
        if self._collector is not None:
            self._collector.shutdown()
        self._collector, self._iterator = None, None
