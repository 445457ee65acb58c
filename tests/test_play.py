"""`play`: a person controls one agent from the browser while a trained policy plays the others.

The browser test drives real headless Chromium (Debian's `chromium`, through Playwright) against the play
server with a policy trained here (a few rollouts of configs/smoke.yaml), presses keys and compares what
the controlled agent did with the engine's own state. Screenshots go to `test-artifacts/`.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path

import pytest
import yaml

from envs.replay import load as load_replay
from metta_lightning.viewer import ReplayServer
from metta_lightning.viewer.play import PlayError, PlayServer, PlaySession, main, resolve_play_game

from test_viewer import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, _chromium, canvas_pixel, hex_rgb

ROOT = Path(__file__).resolve().parents[1]

# Agent 0 starts at (col 1, row 1) beside a mine at (3, 1) that only (2, 1) reaches (walls below and right).
MAP = ["##########",
       "#@.m#....#",
       "#..##..n.#",
       "#....@...#",
       "#.@....@_#",
       "##########"]


def write_game(folder: Path, **overrides) -> str:
    """A small game (the smoke game's rules and actions, on MAP) as a `--game` YAML file."""
    game = {"game": "arena_basic_easy_shaped",
            "game_overrides": {"max_steps": 60, "map_builder": {"kind": "ascii", "lines": MAP},
                               "objects": {"mine_red": {"initial_resource_count": 1}}, **overrides}}
    path = folder / "game.yaml"
    path.write_text(yaml.safe_dump(game))
    return str(path)


@pytest.fixture(scope="module")
def trained_policy(tmp_path_factory) -> str:
    """An artifact from a real (seconds-long) fit of configs/smoke.yaml."""
    import os

    from metta_lightning.cli import main as cli_main

    folder = tmp_path_factory.mktemp("fit")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        cli_main(["fit", "--config", str(ROOT / "configs" / "smoke.yaml"), "--trainer.logger", "false",
                  "--trainer.callbacks+=callbacks.PolicyCheckpoint", "--trainer.callbacks.epoch_interval", "1",
                  "--trainer.default_root_dir", str(folder / "run")])
    finally:
        os.chdir(cwd)
    artifacts = sorted((folder / "run").rglob("*.mpt"))
    assert artifacts, "the smoke fit wrote no policy artifact"
    return str(artifacts[-1])


# ------------------------------------------------------------------------------------------ bad input


def test_bad_game_agent_and_policy(trained_policy, tmp_path, capsys):
    with pytest.raises(PlayError, match="unknown game preset 'no_such'"):
        resolve_play_game("no_such")
    with pytest.raises(PlayError, match="names 2 simulations"):
        resolve_play_game(suite_sim="smoke")
    with pytest.raises(PlayError, match="unknown simulation 'smoke/nope'"):
        resolve_play_game(suite_sim="smoke/nope")
    with pytest.raises(PlayError, match="missing.yaml: file not found"):
        resolve_play_game(str(tmp_path / "missing.yaml"))
    with pytest.raises(PlayError, match="not both"):
        resolve_play_game("arena_basic", "smoke/basic")
    cfg, label = resolve_play_game(write_game(tmp_path))
    assert label == "game" and cfg.num_agents == 4 and cfg.objects["mine_red"].initial_resource_count == 1

    with pytest.raises(PlayError, match=r"agent 4 out of range: game has 4 agents \(0-3\)"):
        PlaySession(cfg, agent=4, game_label="game", replay_dir=str(tmp_path))
    with pytest.raises(PlayError, match="agent must be an integer"):
        PlaySession(cfg, agent="1", game_label="game", replay_dir=str(tmp_path))
    # The same through the command line: a clear message and exit code 2, no traceback.
    import torch

    threads = torch.get_num_threads()
    try:
        assert main([trained_policy, "--game", write_game(tmp_path), "--agent", "7", "--no-browser"]) == 2
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    assert "agent 7 out of range" in err and "Traceback" not in err

    # A policy trained on another action set or observation window does not fit the game.
    rotating, _ = resolve_play_game(write_game(tmp_path, actions={"rotate": {"enabled": True}}))
    with pytest.raises(PlayError, match="does not fit game g: it was trained with actions"):
        PlaySession(rotating, policy=trained_policy, game_label="g", replay_dir=str(tmp_path))
    narrow, _ = resolve_play_game(write_game(tmp_path, obs_width=7, obs_height=7))
    with pytest.raises(PlayError, match="sees 11x11 observations, the game gives 7x7"):
        PlaySession(narrow, policy=trained_policy, game_label="g", replay_dir=str(tmp_path))
    with pytest.raises(PlayError, match="policy: .*nothing.mpt: checkpoint not found"):
        PlaySession(cfg, policy=str(tmp_path / "nothing.mpt"), game_label="g", replay_dir=str(tmp_path))


def test_port_in_use(tmp_path):
    cfg, _ = resolve_play_game(write_game(tmp_path))
    session = PlaySession(cfg, replay_dir=str(tmp_path))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(PlayError, match=f"port {port} on 127.0.0.1 is in use"):
            PlayServer(session, port=port)
        from metta_lightning.viewer import ReplayError

        with pytest.raises(ReplayError, match=f"port {port} on 127.0.0.1 is in use"):
            ReplayServer(["x.json.z"], port=port)


def test_play_command_serves_and_reports_a_busy_port(tmp_path, capsys):
    """The `play` subcommand: registered beside the others, prints the URL it serves; on a busy port it
    exits 2 with a clear message."""
    import urllib.request

    import torch

    from metta_lightning.commands import run_command
    from metta_lightning.viewer.play import serve_play

    threads = torch.get_num_threads()  # `play` sets the process's torch threads; give them back after

    with pytest.raises(SystemExit) as exit_info:
        run_command(["play", "--help"])
    assert exit_info.value.code == 0 and "--suite-sim" in capsys.readouterr().out
    server = serve_play(game=write_game(tmp_path), others="random", replay_dir=str(tmp_path / "replays"),
                        open_browser=False, block=False)
    try:
        out = capsys.readouterr().out
        assert f"Open {server.url}" in out and "you are agent 0 of 4" in out and "random" in out
        info = json.loads(urllib.request.urlopen(server.url + "api/info", timeout=10).read())
        assert info["mode"] == "play" and info["game"] == "game" and info["num_agents"] == 4
        port = server.httpd.server_address[1]
        assert run_command(["play", "--game", write_game(tmp_path), "--no-browser", "--port", str(port)]) == 2
        err = capsys.readouterr().err
        assert f"error: port {port} on 127.0.0.1 is in use" in err and "Traceback" not in err
    finally:
        server.stop()
        torch.set_num_threads(threads)


def _request(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    host, port = server.httpd.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if resp.getheader("Content-Type", "").startswith("application/json")
                             else data.decode(errors="replace"))
    finally:
        conn.close()


def test_malformed_requests_never_take_the_server_down(tmp_path):
    cfg, _ = resolve_play_game(write_game(tmp_path))
    session = PlaySession(cfg, others="random", replay_dir=str(tmp_path / "replays"))
    with PlayServer(session) as server:
        cases = [
            ("POST", "/api/play/step", b"{not json", 400, "not valid JSON"),
            ("POST", "/api/play/step", b'{"action": "jump"}', 400, "unknown action 'jump'"),
            ("POST", "/api/play/step", b'{"action": 99}', 400, "action id 99 out of range [0, 16)"),
            ("POST", "/api/play/step", b'{"action": 1.5}', 400, "action must be an action name or id"),
            ("POST", "/api/play/step", b"[1, 2]", 400, "expected a JSON object"),
            ("POST", "/api/play/step", b"\xff\xfe", 400, "not valid JSON"),
            ("POST", "/api/play/agent", b'{"agent": 12}', 400, "agent 12 out of range"),
            ("POST", "/api/play/agent", b'{"agent": "x"}', 400, "agent must be an integer"),
            ("POST", "/api/play/agent", b"{}", 400, "expected a JSON object like"),
            ("POST", "/api/play/nothing", b"{}", 404, "no such endpoint"),
            ("GET", "/api/play/step", None, 405, "takes POST"),
            ("GET", "/../../etc/passwd", None, 404, "not found"),
            ("GET", "/replays/5", None, 404, "no such replay"),
        ]
        for method, path, body, status, message in cases:
            got, answer = _request(server, method, path, body)
            text = answer["error"] if isinstance(answer, dict) else answer
            assert got == status and message in text, (method, path, body, got, answer)
        got, answer = _request(server, "POST", "/api/play/step", b"x" * 10,
                               {"Content-Length": str(10 ** 9)})
        assert got == 400 and "refused" in answer["error"]
        got, answer = _request(server, "POST", "/api/play/step", b"{}", {"Content-Length": "abc"})
        assert got == 400 and "Content-Length" in answer["error"]
        # A client that hangs up mid-request does not hurt either.
        host, port = server.httpd.server_address[:2]
        with socket.create_connection((host, port)) as s:
            s.sendall(b"POST /api/play/step HTTP/1.1\r\nContent-Length: 50\r\n\r\n{\"act")
        # Still alive, still at step 0, and it plays.
        assert session.env.current_step(0) == 0
        got, answer = _request(server, "POST", "/api/play/step", b'{"action": "move_east"}')
        assert got == 200 and answer["step"] == 1 and answer["actions"][0] == 4
        got, info = _request(server, "GET", "/api/info")
        assert got == 200 and info["mode"] == "play" and info["step"] == 1


# ------------------------------------------------------------------------------------------ the browser


def _agent(page, agent: int) -> dict:
    return next(a for a in page.evaluate("window.viewer.agents()") if a["id"] == agent)


def _press(page, key: str) -> None:
    before = page.evaluate("window.viewer.maxSteps")
    page.keyboard.press(key)
    page.wait_for_function(f"window.viewer.pending === 0 && window.viewer.maxSteps === {before + 1}", timeout=10000)


def _same_as_engine(page, session: PlaySession, agent: int) -> dict:
    """The page's view of `agent` at its latest step equals the engine's own state; returns the engine's."""
    eng = session.engine_agents()[agent]
    shown = _agent(page, agent)
    item_id = {n: i for i, n in enumerate(session.env.item_names)}
    assert shown["location"][:2] == [eng["col"], eng["row"]], (shown, eng)
    assert shown["orientation"] == eng["orientation"]
    assert shown["inventory"] == sorted([item_id[k], v] for k, v in eng["inventory"].items())
    assert shown["action"] == eng["last_action"] and shown["action_success"] == eng["last_action_success"]
    assert shown["frozen"] == eng["frozen"]
    return eng


def test_play_in_chromium(trained_policy, tmp_path):
    sync_api = _chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    cfg, label = resolve_play_game(write_game(tmp_path))
    session = PlaySession(cfg, policy=trained_policy, agent=0, seed=5, replay_dir=str(tmp_path / "replays"),
                          game_label=label)
    errors: list[str] = []
    with PlayServer(session, tab_timeout=1.5) as server, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.goto(server.url, wait_until="load")
            page.wait_for_function("window.viewer && (window.viewer.loaded || window.viewer.error)", timeout=20000)
            assert page.evaluate("window.viewer.error") is None
            assert page.evaluate("window.viewer.live.mode") == "play"
            title = page.evaluate("window.viewer.title")
            assert session.policy.label in title and "game" in title and "episode 0" in title, title
            keys = page.inner_text("#keys")
            assert "ArrowUp W" in keys and "get_items" in keys and "attack_0" in keys
            start = _same_as_engine(page, session, 0)
            assert (start["col"], start["row"], start["orientation"]) == (1, 1, 0)
            others_start = {a["agent_id"]: (a["col"], a["row"]) for a in session.engine_agents()[1:]}

            # Move east into the empty cell: one step east, facing east.
            _press(page, "ArrowRight")
            eng = _same_as_engine(page, session, 0)
            assert (eng["col"], eng["row"], eng["orientation"], eng["last_action_success"]) == (2, 1, 3, True)
            # East again: the mine is in the way; the agent turns (already east) and stays, the move fails.
            _press(page, "d")
            eng = _same_as_engine(page, session, 0)
            assert (eng["col"], eng["row"], eng["last_action_success"]) == (2, 1, False)
            # Turn away (move north into the border wall: turns north, stays), then back east with the arrow.
            _press(page, "w")
            eng = _same_as_engine(page, session, 0)
            assert (eng["col"], eng["row"], eng["orientation"]) == (2, 1, 0)
            _press(page, "ArrowRight")
            assert _same_as_engine(page, session, 0)["orientation"] == 3
            # Take the mine's ore.
            _press(page, "e")
            eng = _same_as_engine(page, session, 0)
            assert eng["last_action"] == session.action_names.index("get_items") and eng["last_action_success"]
            assert eng["inventory"].get("ore_red", 0) >= 1
            assert "ore_red" in page.inner_text("#selected-inventory") or page.locator(
                "#selected-inventory img[alt=ore_red]").count() == 1
            # Noop keys step the game without moving.
            for _ in range(3):
                _press(page, "x")
            eng = _same_as_engine(page, session, 0)
            assert eng["last_action"] == 0 and (eng["col"], eng["row"]) == (2, 1)

            # The policy plays the others: the engine ran exactly the actions the policy chose, not noops.
            engine_now = session.engine_agents()
            for a in engine_now[1:]:
                assert a["last_action"] == session.last_actions[a["agent_id"]]
            last = page.evaluate("window.viewer.lastResponse")
            assert last["actions"][0] == 0 and last["actions"][1:] == [int(x) for x in session.last_actions[1:]]
            moved = [i for i, pos in others_start.items()
                     if (engine_now[i]["col"], engine_now[i]["row"]) != pos]
            acted = set(int(x) for x in session.last_actions[1:]) - {0}
            assert moved or acted, "the policy's agents neither moved nor acted"
            page.screenshot(path=str(ARTIFACTS / "play.png"))

            # The controlled agent's 11x11 view is shown: cells beyond it (col 8 is 6 east of col 2) are
            # shaded until V hides the window.
            assert page.evaluate("window.viewer.showView") is True
            x, y = page.evaluate("window.viewer.cellCenter(8, 1)")
            shaded = canvas_pixel(page, x, y)
            page.keyboard.press("v")
            clear = canvas_pixel(page, x, y)
            assert sum(clear[:3]) > sum(shaded[:3]) + 60, (shaded, clear)
            page.keyboard.press("v")

            # Switch the controlled agent to 1 with `]`, and play it.
            page.keyboard.press("]")
            page.wait_for_function("window.viewer.live.agent === 1 && window.viewer.controlledAgent === 1")
            assert session.agent == 1
            before = session.engine_agents()[1]
            _press(page, "ArrowDown")
            eng = _same_as_engine(page, session, 1)
            assert eng["orientation"] == 1 and eng["last_action"] == session.action_names.index("move_south")
            assert eng["row"] in (before["row"], before["row"] + 1)
            page.keyboard.press("[")
            page.wait_for_function("window.viewer.live.agent === 0")

            # Real time: the game runs on its own at the chosen speed; space pauses it.
            step0 = page.evaluate("window.viewer.maxSteps")
            page.select_option("#play-speed", "15")
            page.select_option("#play-mode", "realtime")
            page.wait_for_function(f"window.viewer.maxSteps >= {step0 + 4}", timeout=10000)
            page.keyboard.press("Space")
            page.wait_for_function("window.viewer.pending === 0")
            time.sleep(0.4)
            paused_at = page.evaluate("window.viewer.maxSteps")
            time.sleep(0.5)
            assert page.evaluate("window.viewer.maxSteps") == paused_at == session.env.current_step(0)
            _same_as_engine(page, session, 0)
            page.select_option("#play-mode", "key")

            # Scrubbing back shows history; the slider returns to the live end.
            page.evaluate("window.viewer.setStep(1)")
            assert _agent(page, 0)["location"][:2] == [2, 1]
            page.evaluate(f"window.viewer.setStep({paused_at})")

            # Save (Ctrl+S): the replay holds exactly the engine's trajectory of agent 0.
            page.keyboard.press("Control+s")
            page.wait_for_selector("#saved-link", timeout=10000)
            assert session.saved, server.messages
            saved = session.saved[-1]
            replay = load_replay(saved)
            assert replay["complete"] is False and replay["max_steps"] == paused_at
            assert replay["metadata"]["controlled_agent"] == 0 and replay["metadata"]["policy"] == session.policy.label
            a0 = next(o for o in replay["objects"] if o.get("agent_id") == 0)
            loc = dict((s, v) for s, v in a0["location"])
            assert loc[1][:2] == [2, 1] and loc[0][:2] == [1, 1]
            assert any(msg.startswith("saved the episode") for msg in server.messages)
            # The page's link opens it from the play server itself.
            link = page.get_attribute("#saved-link", "href")
            lpage = browser.new_page(viewport={"width": 1000, "height": 700})
            lpage.goto(server.url + link, wait_until="load")
            lpage.wait_for_function("window.viewer && (window.viewer.loaded || window.viewer.error)", timeout=20000)
            assert lpage.evaluate("window.viewer.error") is None and lpage.evaluate("window.viewer.live") is None
            assert lpage.evaluate("window.viewer.maxSteps") == paused_at
            lpage.close()

            # The saved episode opens in the replay viewer (the `replay` command's server) at its last step.
            final = {a["agent_id"]: a for a in session.engine_agents()}
            with ReplayServer([saved]) as rserver:
                rpage = browser.new_page(viewport={"width": 1280, "height": 800})
                rpage.on("pageerror", lambda e: errors.append(f"replay pageerror: {e}"))
                rpage.goto(rserver.url, wait_until="load")
                rpage.wait_for_function("window.viewer && (window.viewer.loaded || window.viewer.error)",
                                        timeout=20000)
                assert rpage.evaluate("window.viewer.error") is None
                assert rpage.evaluate("window.viewer.live") is None
                assert rpage.evaluate("window.viewer.maxSteps") == paused_at
                assert session.policy.label in rpage.evaluate("window.viewer.title")
                rpage.evaluate(f"window.viewer.setStep({paused_at})")
                for a in rpage.evaluate("window.viewer.agents()"):
                    assert a["location"][:2] == [final[a["id"]]["col"], final[a["id"]]["row"]]
                    x, y = rpage.evaluate(f"window.viewer.agentBodyPoint({a['id']})")
                    px = canvas_pixel(rpage, x, y)
                    assert max(abs(p - q) for p, q in zip(px[:3], hex_rgb(a["color"]))) < 40, (a, px)
                rpage.screenshot(path=str(ARTIFACTS / "play-saved-replay.png"))
                rpage.close()

            # Restart (N): the next episode, from step 0.
            page.keyboard.press("n")
            page.wait_for_function("window.viewer.episode === 1 && window.viewer.maxSteps === 0", timeout=10000)
            assert session.env.episode_index(0) == 1 and session.env.current_step(0) == 0
            _press(page, "ArrowDown")
            _same_as_engine(page, session, 0)

            # Closing the tab: the server notices, says so, and keeps serving; a new tab resumes the game.
            page.close(run_before_unload=True)
            deadline = time.monotonic() + 10
            while not any("keeps running" in m for m in server.messages) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert any("keeps running" in m for m in server.messages), server.messages
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(server.url, wait_until="load")
            page.wait_for_function("window.viewer && window.viewer.loaded", timeout=20000)
            assert page.evaluate("window.viewer.maxSteps") == 1 and page.evaluate("window.viewer.episode") == 1
            _press(page, "ArrowUp")
            _same_as_engine(page, session, 0)
        finally:
            browser.close()
    assert not errors, errors
