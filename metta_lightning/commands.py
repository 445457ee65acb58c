"""The subcommands beside `fit` that are not Lightning runs: `evaluate`, `analyze`, `replay`, `curves`, `play`,
`dashboard`.

Each command is one function below: its signature and docstring are the command line (`python -m
metta_lightning <command> --help`). jsonargparse builds the parser from them (types, defaults, the `Args:`
help), as LightningCLI does for `fit`, with the conventions these commands always had: options spelled with
dashes (`--replay-dir`), a bool parameter is a flag (`--no-browser`), a list parameter is given by repeating
its option (`-m a -m b`), and the positional parameter takes space-separated values (`evaluate A B`). A
function returns the exit code: 2 for bad input, with one line on stderr. `metta_lightning.cli.main` hands
argv to `run_command` when its first word is one of `COMMANDS`. Policy URIs are anything
`metta_lightning.checkpoint.load_policy` takes: `<dir>/<run>:v<N>.mpt`, `<dir>/:latest`, a run name (`<run>`,
`<run>:v<N>`, under `$METTA_DATA_DIR`), `s3://...`, `file://...`.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from typing import Callable, Literal, NamedTuple, NoReturn, Optional, Sequence, get_args, get_origin, get_type_hints

import docstring_parser
from jsonargparse import ArgumentParser

__all__ = ["COMMANDS", "UsageError", "command_parser", "run_command"]


class UsageError(Exception):
    """Bad command-line input that only the command's function can see: reported like a parser error (usage,
    one line, exit code 2)."""


def _fail(error: object) -> int:
    print(f"error: {error}", file=sys.stderr)
    return 2


def evaluate(policies: list[str], suite: str = "arena", db: Optional[str] = None, replay_dir: Optional[str] = None,
             replay_episodes: int = 1, deterministic: bool = False, device: str = "cpu", no_scorecard: bool = False,
             cross_play: bool = False, share: float = 0.5, team: Optional[str] = None) -> int:
    """Evaluate policies on a simulation suite; append to a stats database, print the table and write the
    scorecard.

    Args:
        policies: policy URIs (checkpoint artifacts, :latest, run names)
        suite: suite (arena, smoke), one simulation (arena/combat), a comma list, or a YAML file
        db: stats database to append to, fsspec URLs work (if not given: $METTA_DATA_DIR/eval/eval.duckdb)
        replay_dir: where to write replays (if not given: a `replays` folder next to the database)
        replay_episodes: episodes recorded per simulation (0: none)
        deterministic: argmax actions instead of sampling
        device: torch device for the policies
        no_scorecard: skip scorecard.png/.html
        cross_play: play every pair of the policies together in each game (NPC names `random` and `noop` are
            policies too); the scorecard adds the pairwise table and ratings
        share: cross-play: share of each game's agents the first policy of a pair plays
        team: cross-play: comma-separated agent ids the first policy of a pair plays (instead of --share)
    """
    if not 0 < share < 1:
        raise UsageError(f"--share {share}: must be between 0 and 1 (exclusive)")
    try:
        agent_ids = [int(x) for x in team.split(",") if x.strip()] if team else None
    except ValueError:
        raise UsageError(f"--team {team}: expected comma-separated agent ids, e.g. 0,2") from None

    from .checkpoint_uris import CheckpointError, data_dir
    from .scorecard import analyze
    from .simulation import SimulationError, format_matches, format_results
    from .simulation import cross_play as play_pairs
    from .simulation import evaluate as play_alone
    from .stats_db import StatsDBError
    from .threads import configure_torch_threads

    configure_torch_threads()
    db = db or os.path.join(data_dir(), "eval", "eval.duckdb")
    if replay_dir is None and replay_episodes > 0:
        replay_dir = (db.rsplit("/", 1)[0] if "://" in db else os.path.dirname(os.path.abspath(db))) + "/replays"
    try:
        if cross_play:
            matches = play_pairs(policies, suite, db, replay_dir=replay_dir, replay_episodes=replay_episodes,
                                 deterministic=deterministic, device=device,
                                 shares=None if agent_ids else [share, 1 - share], team=agent_ids)
            print(format_matches(matches))
        else:
            results = play_alone(policies, suite, db, replay_dir=replay_dir, replay_episodes=replay_episodes,
                                 deterministic=deterministic, device=device)
            print(format_results(results))
        print(f"\nappended to {db}")
        if not no_scorecard:
            _, paths = analyze([db], out_dir=None if "://" not in db else ".", print_table=False)
            print("\n".join(f"wrote {p}" for p in (paths["png"], paths["html"]) if p))
    except (CheckpointError, SimulationError, StatsDBError) as e:
        return _fail(e)
    return 0


def analyze(databases: list[str], metric: str = "reward", out: Optional[str] = None) -> int:
    """Scorecards (policy x simulation, and cross-play's pairwise table and ratings) from evaluation databases:
    print the table, write scorecard.png and scorecard.html.

    Args:
        databases: stats databases (*.duckdb; paths or fsspec URLs), merged
        metric: agent metric to score (reward: the episode return; e.g. heart.gained)
        out: folder for scorecard.png/.html (if not given: the first database's)
    """
    from .scorecard import analyze as write_scorecard
    from .stats_db import StatsDBError

    try:
        write_scorecard(databases, metric=metric, out_dir=out)
    except StatsDBError as e:
        return _fail(e)
    return 0


def replay(replays: list[str], host: str = "127.0.0.1", port: int = 0, no_browser: bool = False) -> int:
    """Serve the replay viewer locally (Ctrl-C to stop).

    Args:
        replays: replay files (*.json.z) or folders of them; paths or fsspec URLs
        host: address to bind (127.0.0.1: this machine only)
        port: port (0: any free port)
        no_browser: only print the URL
    """
    from .viewer import ReplayError, serve

    try:
        serve(replays, host=host, port=port, open_browser=not no_browser)
    except ReplayError as e:
        return _fail(e)
    return 0


def play(policy: Optional[str] = None, game: Optional[str] = None, suite_sim: Optional[str] = None, agent: int = 0,
         others: Literal["noop", "random"] = "noop", seed: int = 0, max_steps: Optional[int] = None,
         deterministic: bool = False, replay_dir: str = "play_replays", host: str = "127.0.0.1", port: int = 0,
         no_browser: bool = False) -> int:
    """Play one agent from the browser while a policy plays the others (keys shown on the page).

    Args:
        policy: policy URI for the other agents (artifact, <dir>/:latest, run name); omit to have them noop
            (or --others random)
        game: preset (arena_basic, arena_combat, arena_basic_easy_shaped, arena), or a YAML/JSON file of
            GameConfig fields or of {game: <preset>, game_overrides: {...}} (if not given: arena_basic)
        suite_sim: a simulation of an evaluation suite, e.g. arena/basic (instead of --game)
        agent: the agent you control
        others: what the other agents do when no policy is given
        seed: game seed (maps and the policy's sampling)
        max_steps: episode length (if not given: the game's)
        deterministic: the policy takes argmax actions
        replay_dir: where saved episodes go (any fsspec URL)
        host: address to bind (127.0.0.1: this machine only)
        port: port (0: any free port)
        no_browser: only print the URL
    """
    import torch

    from .viewer import ReplayError
    from .viewer.play import PlayError, serve_play

    if os.environ.get("METTA_TORCH_THREADS"):
        from .threads import configure_torch_threads

        configure_torch_threads()
    else:
        # One game's batch (num_agents rows) acts fastest on one thread: measured 10.8 ms per arena step
        # with one, 158 ms with two on a busy 2-core machine.
        torch.set_num_threads(1)
    try:
        serve_play(policy, game=game, suite_sim=suite_sim, agent=agent, seed=seed, others=others, host=host,
                   port=port, replay_dir=replay_dir, max_steps=max_steps, open_browser=not no_browser,
                   deterministic=deterministic)
    except (PlayError, ReplayError) as e:
        return _fail(e)
    return 0


def dashboard(folders: Optional[list[str]] = None, host: str = "127.0.0.1", port: int = 8050, refresh: float = 5.0,
              no_browser: bool = False) -> int:
    """Serve a local web dashboard over run folders: runs, learning curves, scorecards, checkpoints, replays.

    Args:
        folders: run folders or folders of runs, paths or fsspec URIs (if none: $METTA_DATA_DIR, else
            ./train_dir)
        host: address to bind (127.0.0.1: this machine only)
        port: port (0: any free port)
        refresh: seconds between the page's refreshes
        no_browser: only print the URL
    """
    if refresh <= 0:
        raise UsageError(f"--refresh {refresh}: must be > 0")
    from .checkpoint_uris import data_dir
    from .dashboard import DashboardServer
    from .viewer import open_in_browser, serve_until_interrupted

    folders = folders or [data_dir()]
    try:
        server = DashboardServer(folders, host=host, port=port, refresh_s=refresh).start()
    except OSError as e:
        return _fail(f"cannot serve on {host}:{port}: {e}")
    print(f"Dashboard: {server.url}  (over {', '.join(folders)}; Ctrl-C to stop)", flush=True)
    if not no_browser:
        open_in_browser(server.url)
    serve_until_interrupted(server)
    return 0


def curves(run: str, out: Optional[str] = None, metric: Optional[list[str]] = None, x_key: Optional[str] = None,
           smooth: int = 1, last_segment: bool = False, list: bool = False) -> int:  # noqa: A002 - the option's name
    """Draw a run's learning curves (from its metrics.csv) as a PNG; print the PNG's path.

    Args:
        run: run folder / metrics.csv / CSV logger folder / a path into W&B's offline logs (followed to the
            metrics.csv beside that run)
        out: output PNG (if not given: <run>/learning_curve.png)
        metric: metric to plot, repeatable (if not given: overview/reward, env_agent/heart.gained, overview/sps)
        x_key: x-axis metric (if not given: agent steps, else the logging step)
        smooth: moving-average window in logged points
        last_segment: a CSV logger folder with one version_* per fit: draw only the newest (without it: all)
        list: list the logged metric names and exit
    """
    from .curves import DEFAULT_METRICS, load_rows, plot_learning_curve

    if list:
        rows, kind = load_rows(run, not last_segment)
        print(f"{kind}: {len(rows)} rows")
        print("\n".join(sorted(set().union(*rows))))
        return 0
    print(plot_learning_curve(run, out, tuple(metric or DEFAULT_METRICS), x_key, smooth, not last_segment))
    return 0


class _Command(NamedTuple):
    function: Callable[..., int]
    nargs: Optional[str]  # of the positional parameter (the function's first)
    short: dict[str, str] = {}  # parameter -> short option


COMMANDS = {
    "evaluate": _Command(evaluate, "+"),
    "analyze": _Command(analyze, "+"),
    "replay": _Command(replay, "+"),
    "curves": _Command(curves, None, {"out": "-o", "metric": "-m", "x_key": "-x"}),
    "play": _Command(play, "?"),
    "dashboard": _Command(dashboard, "*"),
}


def _is_list(hint) -> bool:
    return list in (get_origin(hint), *map(get_origin, get_args(hint)))  # list[X] or Optional[list[X]]


def _expected(hint) -> str:
    """What a value of type `hint` looks like, for an error message."""
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(map(str, get_args(hint)))
    if type(None) in get_args(hint):
        return _expected(next(a for a in get_args(hint) if a is not type(None)))
    return {int: "an integer", float: "a number"}.get(hint, getattr(hint, "__name__", str(hint)))


class _Parser(ArgumentParser):
    """jsonargparse's parser whose errors are one line naming the option as typed: `--port abc: expected an
    integer` instead of its `Parser key "port":` paragraph. `hints`: the parameters' types."""

    hints: dict = {}

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        key = re.match(r'Parser key "([^"]+)":', message)
        value = re.search(r"(?:Got|Given) value: (.*)", message)
        if key and value and key[1] in self.hints:
            option = next(a.option_strings[-1] for a in self._actions if a.dest == key[1])
            message = f"{option} {value[1]}: expected {_expected(self.hints[key[1]])}"
        super().error(" ".join(message.split()), ex)


def command_parser(name: str) -> ArgumentParser:
    """The parser of command `name`, from its function's signature and docstring."""
    command = COMMANDS[name]
    hints = get_type_hints(command.function)
    hints.pop("return", None)
    doc = docstring_parser.parse(command.function.__doc__)
    helps = {p.arg_name: " ".join(p.description.split()) for p in doc.params}
    parser = _Parser(prog=f"python -m metta_lightning {name}", description=doc.description)
    parser.hints = hints
    parameters = inspect.signature(command.function).parameters
    positional, *options = parameters
    default = {} if parameters[positional].default is inspect.Parameter.empty else {"default": None}
    parser.add_argument(positional, nargs=command.nargs, help=helps[positional], **default)
    # As these commands always had them: a bool is a flag (`--no-browser`), a list repeats its option (`-m a -m b`).
    by_hand = [p for p in options if hints[p] is bool or _is_list(hints[p])]
    parser.add_function_arguments(command.function, skip={positional, *by_hand}, as_group=False)
    for option in by_hand:
        parser.add_argument(f"--{option}", action="store_true" if hints[option] is bool else "append",
                            help=helps[option])
    for action in parser._actions:  # `--replay_dir` -> `--replay-dir`; short options
        for i, option in enumerate(action.option_strings):
            if "_" in option:
                action.option_strings[i] = option.replace("_", "-")
                parser._option_string_actions[action.option_strings[i]] = parser._option_string_actions.pop(option)
        if action.dest in command.short:
            action.option_strings.insert(0, command.short[action.dest])
            parser._option_string_actions[command.short[action.dest]] = action
    return parser


def run_command(argv: Sequence[str]) -> int:
    """Run one of `COMMANDS` (argv[0]) with the rest of argv; return its exit code."""
    name = argv[0]
    if name not in COMMANDS:
        raise ValueError(f"unknown command {name!r} (commands: {', '.join(COMMANDS)})")
    parser = command_parser(name)
    args = parser.parse_args(list(argv[1:]))
    try:
        return COMMANDS[name].function(**args.as_dict())
    except UsageError as e:
        parser.error(str(e))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_command(sys.argv[1:]))
