"""The subcommands beside `fit` that are not Lightning runs: `evaluate`, `analyze`, `replay`, `curves`, `play`,
`dashboard`.

    python -m metta_lightning evaluate <policy-uri> [<policy-uri> ...] --suite arena --db eval.duckdb
    python -m metta_lightning evaluate <policy-uri> <policy-uri | random | noop> ... --cross-play [--share 0.5]
    python -m metta_lightning analyze eval.duckdb [more.duckdb ...] [--metric heart.gained] [--out DIR]
    python -m metta_lightning replay <replay.json.z | folder | URL> [--port 8000] [--no-browser]
    python -m metta_lightning curves <wandb run dir | CSV log dir> [-o curve.png] [-m env_agent/heart.gained]
    python -m metta_lightning dashboard [<run folder | data dir | fsspec URI> ...] [--port 8050]
    python -m metta_lightning play [<policy-uri>] [--game arena_basic | --suite-sim arena/basic] [--agent 0]

`metta_lightning.cli.main` hands argv to `run_command` when its first word is one of `COMMANDS`.
Policy URIs are anything `metta_lightning.checkpoint.load_policy` takes: `<dir>/<run>:v<N>.mpt`,
`<dir>/:latest`, a run name (`<run>`, `<run>:v<N>`, under `$METTA_DATA_DIR`), `s3://...`, `file://...`.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["COMMANDS", "run_command", "evaluate_main"]

COMMANDS = ("evaluate", "analyze", "replay", "curves", "play", "dashboard")


def _default_db() -> str:
    from .checkpoint import data_dir

    return os.path.join(data_dir(), "eval", "eval.duckdb")


def _agent_ids(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated agent ids, e.g. 0,2") from None


def evaluate_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="metta_lightning evaluate",
        description="Evaluate policies on a simulation suite; append to a stats database, print the table and "
                    "write the scorecard.")
    parser.add_argument("policies", nargs="+", help="policy URIs (checkpoint artifacts, :latest, run names)")
    parser.add_argument("--suite", default="arena",
                        help="suite (arena, smoke), one simulation (arena/combat), a comma list, or a YAML file")
    parser.add_argument("--db", default=None, help="stats database to append to (default "
                                                   "$METTA_DATA_DIR/eval/eval.duckdb; fsspec URLs work)")
    parser.add_argument("--replay-dir", default=None,
                        help="where to write replays (default: a `replays` folder next to the database)")
    parser.add_argument("--replay-episodes", type=int, default=1, help="episodes recorded per simulation (0: none)")
    parser.add_argument("--deterministic", action="store_true", help="argmax actions instead of sampling")
    parser.add_argument("--device", default="cpu", help="torch device for the policies")
    parser.add_argument("--no-scorecard", action="store_true", help="skip scorecard.png/.html")
    parser.add_argument("--cross-play", action="store_true",
                        help="play every pair of the policies together in each game (NPC names `random` and "
                             "`noop` are policies too); the scorecard adds the pairwise table and ratings")
    parser.add_argument("--share", type=float, default=0.5,
                        help="cross-play: share of each game's agents the first policy of a pair plays (default 0.5)")
    parser.add_argument("--team", type=_agent_ids, default=None,
                        help="cross-play: comma-separated agent ids the first policy of a pair plays (instead of --share)")
    args = parser.parse_args(argv)
    if not 0 < args.share < 1:
        parser.error(f"--share {args.share}: must be between 0 and 1 (exclusive)")

    from .checkpoint import CheckpointError
    from .scorecard import analyze
    from .simulation import SimulationError, cross_play, evaluate, format_matches, format_results
    from .stats_db import StatsDBError

    db = args.db or _default_db()
    replay_dir = args.replay_dir
    if replay_dir is None and args.replay_episodes > 0:
        replay_dir = (db.rsplit("/", 1)[0] if "://" in db else os.path.dirname(os.path.abspath(db))) + "/replays"
    try:
        if args.cross_play:
            matches = cross_play(args.policies, args.suite, db, replay_dir=replay_dir,
                                 replay_episodes=args.replay_episodes, deterministic=args.deterministic,
                                 device=args.device, shares=None if args.team else [args.share, 1 - args.share],
                                 team=args.team)
            print(format_matches(matches))
        else:
            results = evaluate(args.policies, args.suite, db, replay_dir=replay_dir,
                               replay_episodes=args.replay_episodes, deterministic=args.deterministic,
                               device=args.device)
            print(format_results(results))
        print(f"\nappended to {db}")
        if not args.no_scorecard:
            out = None if "://" not in db else "."
            _, paths = analyze([db], out_dir=out, print_table=False)
            print("\n".join(f"wrote {p}" for p in (paths["png"], paths["html"]) if p))
    except (CheckpointError, SimulationError, StatsDBError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def run_command(argv: list[str]) -> int:
    """Run one of `COMMANDS` (argv[0]) and return its exit code."""
    command, rest = argv[0], list(argv[1:])
    if command == "evaluate":
        from .threads import configure_torch_threads

        configure_torch_threads()
        return evaluate_main(rest)
    if command == "analyze":
        from .scorecard import main as analyze_main

        return analyze_main(rest)
    if command == "replay":
        from .viewer import main as replay_main

        return replay_main(rest)
    if command == "curves":
        from .curves import main as curves_main

        return curves_main(rest)
    if command == "play":
        from .viewer.play import main as play_main

        return play_main(rest)
    if command == "dashboard":
        from .dashboard import main as dashboard_main

        return dashboard_main(rest)
    raise ValueError(f"unknown command {command!r} (commands: {', '.join(COMMANDS)})")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_command(sys.argv[1:]))
