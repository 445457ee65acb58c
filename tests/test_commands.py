"""The command lines of the subcommands beside `fit` (`metta_lightning.commands`): built by jsonargparse from
each command's function, spelled as they always were (space-separated positionals, dashed options, flags,
repeated `-m`), `--help` naming every option with its docstring help, and a bad value one line naming it."""

from __future__ import annotations

import inspect

import docstring_parser
import pytest

from metta_lightning.commands import COMMANDS, command_parser, run_command


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_names_every_option_with_its_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        run_command([name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m metta_lightning {name} ")
    flat = "".join(out.split())  # help is wrapped: compare without whitespace
    function = COMMANDS[name].function
    doc = docstring_parser.parse(function.__doc__)
    assert "".join(doc.description.split()) in flat
    params = list(inspect.signature(function).parameters)
    assert {p.arg_name for p in doc.params} == set(params)
    for p in doc.params:
        option = p.arg_name if p.arg_name == params[0] else "--" + p.arg_name.replace("_", "-")
        assert f" {option}" in out, option
        assert "".join(p.description.split()) in flat, option


def test_command_lines_parse_as_they_always_did():
    def parse(name, *argv):
        return command_parser(name).parse_args(list(argv)).as_dict()

    args = parse("evaluate", "run_a:v3", "train_dir/b/checkpoints/:latest", "random", "--suite", "arena", "--db",
                 "x.duckdb", "--cross-play", "--deterministic", "--replay-episodes", "0", "--team", "0,2")
    assert args["policies"] == ["run_a:v3", "train_dir/b/checkpoints/:latest", "random"]
    assert args["cross_play"] and args["deterministic"] and not args["no_scorecard"]
    assert (args["suite"], args["db"], args["replay_episodes"], args["team"], args["share"]) == (
        "arena", "x.duckdb", 0, "0,2", 0.5)
    assert parse("evaluate", "--no-scorecard", "a", "b")["policies"] == ["a", "b"]  # a flag takes no value
    assert parse("analyze", "a.duckdb", "s3://b/more.duckdb", "--out", "card/") == {
        "databases": ["a.duckdb", "s3://b/more.duckdb"], "metric": "reward", "out": "card/"}
    assert parse("replay", "--no-browser", "r/", "--port=8000") == {
        "replays": ["r/"], "host": "127.0.0.1", "port": 8000, "no_browser": True}
    args = parse("curves", "train_dir/arena", "-o", "c.png", "-m", "overview/reward", "--metric", "losses/value_loss",
                 "-x", "overview/agent_steps", "--smooth", "3")
    assert (args["run"], args["out"], args["metric"], args["x_key"], args["smooth"]) == (
        "train_dir/arena", "c.png", ["overview/reward", "losses/value_loss"], "overview/agent_steps", 3)
    assert parse("curves", "r")["metric"] is None
    args = parse("play", "--game", "arena_basic", "--agent", "2", "--others", "random", "--max-steps", "50")
    assert (args["policy"], args["game"], args["agent"], args["others"], args["max_steps"]) == (
        None, "arena_basic", 2, "random", 50)
    assert parse("play", "run:v12", "--suite-sim", "arena/combat")["policy"] == "run:v12"
    assert not parse("dashboard")["folders"]
    assert parse("dashboard", "a", "s3://b/c", "--refresh", "2")["folders"] == ["a", "s3://b/c"]


@pytest.mark.parametrize("argv,message", [
    (["replay", "x.json.z", "--port", "abc"], "--port abc: expected an integer"),
    (["play", "--others", "everyone"], "--others everyone: expected one of noop, random"),
    (["play", "--max-steps", "ten"], "--max-steps ten: expected an integer"),
    (["evaluate", "a", "--share", "half"], "--share half: expected a number"),
    (["evaluate", "a", "b", "--cross-play", "--share", "1.5"], "--share 1.5: must be between 0 and 1 (exclusive)"),
    (["evaluate", "a", "b", "--cross-play", "--team", "0,x"], "--team 0,x: expected comma-separated agent ids, e.g. 0,2"),
    (["dashboard", "--refresh", "0"], "--refresh 0.0: must be > 0"),
    (["curves", "run", "--smooth", "1.5"], "--smooth 1.5: expected an integer"),
    (["analyze"], "the following arguments are required: databases"),
    (["replay", "x.json.z", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_value_is_one_line_naming_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        run_command(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: python -m metta_lightning {argv[0]} ") and "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"error: {message}"


def test_unknown_command():
    with pytest.raises(ValueError, match="unknown command 'nope'"):
        run_command(["nope"])
