"""The replay viewer in real headless Chromium (Debian's `chromium`, driven by Playwright).

It loads a replay written by the engine from the local server, the canvas shows the agents, moving
the step slider moves them, the map is centred, zooms around the cursor and pans, the title names the
policy and simulation, the timeline marks events and jumps on a click, and the console stays clean.
Screenshots are kept in `test-artifacts/`.
CI needs: `apt-get install -y chromium` and `pip install playwright` (the `test` extra).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pytest

from metta_lightning.viewer import STATIC_DIR, ReplayError, ReplayServer, check_replay, find_replays, serve

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def engine_replay(directory: Path, steps: int = 40) -> str:
    """Play a small combat arena with random actions and record game 0's episode."""
    from envs import MettaGrid
    from envs.presets import resolve_game

    cfg = resolve_game("arena_combat", {
        "max_steps": steps,
        "map_builder": {"num_agents": 6, "rooms": [1, 1], "room_size": 14, "border": 1,
                        "objects": {"wall": 6, "altar": 2, "mine_red": 3, "generator_red": 2, "lasery": 1,
                                    "armory": 1}}})
    env = MettaGrid(cfg, num_envs=1, seed=3)
    rec = env.record_replays([0], str(directory))
    env.reset()
    rng = np.random.default_rng(0)
    moves = np.arange(1, 5)
    for _ in range(steps):
        env.step(rng.choice(moves, env.num_rows).astype(np.int32))  # moves only: agents surely travel
    assert rec.paths, "the engine wrote no replay"
    return rec.paths[0]


@pytest.fixture(scope="module")
def replay_path(tmp_path_factory) -> str:
    return engine_replay(tmp_path_factory.mktemp("replays"))


def test_find_and_check_replays(replay_path, tmp_path):
    assert find_replays([str(Path(replay_path).parent)]) == [replay_path]
    nested = tmp_path / "run" / "replays" / "v1"  # folders are searched recursively, for *.json.z only
    nested.mkdir(parents=True)
    (nested / "game0_episode0.json.z").write_bytes(Path(replay_path).read_bytes())
    (tmp_path / "run" / "trace_epoch000001_rank0.json").write_text("{}")
    assert find_replays([str(tmp_path / "run")]) == [str(nested / "game0_episode0.json.z")]
    summary = check_replay(replay_path)
    assert summary["num_agents"] == 6 and summary["max_steps"] == 40
    bad = tmp_path / "bad.json.z"
    bad.write_bytes(b"\x78\x9c garbage")
    with pytest.raises(ReplayError, match="cannot decompress"):
        check_replay(str(bad))
    notreplay = tmp_path / "x.json.z"
    notreplay.write_bytes(zlib.compress(b'{"hello": 1}'))
    with pytest.raises(ReplayError, match="not a MettaGrid replay"):
        check_replay(str(notreplay))
    with pytest.raises(ReplayError, match="not found"):
        find_replays([str(tmp_path / "missing.json.z")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReplayError, match="no replays"):
        find_replays([str(empty)])
    with pytest.raises(ReplayError, match="cannot decompress"):
        serve([str(bad)], block=False, open_browser=False)


def test_server_serves_page_list_and_bytes(replay_path):
    import json
    import urllib.error
    import urllib.request

    with ReplayServer([replay_path]) as server:
        assert server.url.startswith("http://127.0.0.1:")
        page = urllib.request.urlopen(server.url).read().decode()
        assert "<canvas" in page and "viewer.js" in page and "http" not in page.split("<body")[1].replace(
            "http-equiv", "")  # no CDN
        listing = json.loads(urllib.request.urlopen(server.url + "api/replays").read())
        assert listing[0]["name"] == Path(replay_path).name
        data = urllib.request.urlopen(server.url + listing[0]["url"]).read()
        assert data == Path(replay_path).read_bytes()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(server.url + "replays/7")
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(server.url + "../../etc/passwd")


def _chromium():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    return sync_api


def canvas_pixel(page, x: float, y: float) -> list[int]:
    return page.evaluate("([x, y]) => Array.from(document.getElementById('map').getContext('2d')"
                         ".getImageData(Math.floor(x), Math.floor(y), 1, 1).data)", [x, y])


def hex_rgb(h: str) -> list[int]:
    return [int(h[i:i + 2], 16) for i in (1, 3, 5)]


def color_close(px: list[int], color: str, tol: int = 40) -> bool:
    return max(abs(p - q) for p, q in zip(px[:3], hex_rgb(color))) < tol


def body_pixel(page, agent: int) -> list[int]:
    x, y = page.evaluate(f"window.viewer.agentBodyPoint({agent})")
    return canvas_pixel(page, x, y)


def open_viewer(browser, url: str, errors: list[str]):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.goto(url, wait_until="load")
    page.wait_for_function("window.viewer && (window.viewer.loaded || window.viewer.error)", timeout=20000)
    return page


def test_viewer_in_headless_chromium(replay_path, tmp_path):
    sync_api = _chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    # Evaluation writes replays under <dir>/<policy>/v<N>/<suite>/<simulation>/: the title names them.
    evaluated = tmp_path / "replays" / "mypolicy" / "v3" / "arena" / "combat" / "game0_episode0.json.z"
    evaluated.parent.mkdir(parents=True)
    evaluated.write_bytes(Path(replay_path).read_bytes())
    with ReplayServer([str(evaluated)]) as server, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = open_viewer(browser, server.url, errors)
            assert page.evaluate("window.viewer.error") is None
            assert page.evaluate("window.viewer.maxSteps") == 40
            title = page.evaluate("window.viewer.title")
            assert "mypolicy:v3" in title and "arena/combat" in title and "episode 0" in title, title
            assert "mypolicy:v3" in page.title()

            # Fitted and centred: equal margins on both sides of the 16x16 map.
            view = page.evaluate("window.viewer.view()")
            w, h = page.evaluate("window.viewer.mapSize")
            assert abs(view["ox"] - (view["width"] - w * view["cell"]) / 2) < 1
            assert abs(view["oy"] - (view["height"] - h * view["cell"]) / 2) < 1
            assert min(view["ox"], view["oy"]) >= 0 and min(view["width"] - view["ox"] - w * view["cell"],
                                                             view["height"] - view["oy"] - h * view["cell"]) >= 0

            agents0 = page.evaluate("window.viewer.agents()")
            assert len(agents0) == 6
            for a in agents0:  # every agent is drawn in its colour at its cell
                assert color_close(body_pixel(page, a["id"]), a["color"]), a

            # Move the slider (as a user would: set the value, fire `input`).
            page.eval_on_selector("#step", "(el) => { el.value = '30'; el.dispatchEvent(new Event('input')); }")
            assert page.evaluate("window.viewer.step") == 30
            assert page.inner_text("#step-label") == "step 30 / 40"
            agents30 = page.evaluate("window.viewer.agents()")
            moved = [a for a, b in zip(agents0, agents30) if a["location"] != b["location"]]
            assert moved, "no agent moved between step 0 and step 30"
            for a in agents30:
                assert color_close(body_pixel(page, a["id"]), a["color"]), a
            # A cell an agent left is no longer drawn in its colour.
            left = next((a for a, b in zip(agents0, agents30)
                         if all(b2["location"][:2] != a["location"][:2] for b2 in agents30)), None)
            if left is not None:
                x, y = page.evaluate("([c, r]) => window.viewer.cellCenter(c, r)", left["location"][:2])
                assert not color_close(canvas_pixel(page, x, y + 4), left["color"])

            # The side panel follows the selected agent; keyboard steps; play advances.
            page.evaluate("window.viewer.select(2)")
            assert "agent 2" in page.inner_text("#selected")
            page.keyboard.press("ArrowLeft")
            assert page.evaluate("window.viewer.step") == 29
            page.keyboard.press("Home")
            assert page.evaluate("window.viewer.step") == 0
            page.keyboard.press("End")
            assert page.evaluate("window.viewer.step") == 40
            page.eval_on_selector("#speed", "(el) => { el.value = '200'; el.dispatchEvent(new Event('change')); }")
            page.click("#play")
            page.wait_for_function("window.viewer.step === 40", timeout=10000)

            # A click on the timeline jumps there (a quarter of the way: step 10).
            box = page.locator("#timeline").bounding_box()
            page.mouse.click(box["x"] + box["width"] * 0.25, box["y"] + box["height"] / 2)
            assert abs(page.evaluate("window.viewer.step") - 10) <= 1

            # The wheel zooms around the cursor: the map point under it stays put.
            box = page.locator("#map").bounding_box()
            mx, my = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.4
            before = page.evaluate("window.viewer.view()")
            page.mouse.move(mx, my)
            page.mouse.wheel(0, -300)
            page.wait_for_function(f"window.viewer.cell > {before['cell'] * 1.2}")
            after = page.evaluate("window.viewer.view()")
            px, py = mx - box["x"], my - box["y"]
            cell_before = ((px - before["ox"]) / before["cell"], (py - before["oy"]) / before["cell"])
            cell_after = ((px - after["ox"]) / after["cell"], (py - after["oy"]) / after["cell"])
            assert abs(cell_before[0] - cell_after[0]) < 0.05 and abs(cell_before[1] - cell_after[1]) < 0.05
            # Dragging pans by the distance dragged.
            page.mouse.move(mx, my)
            page.mouse.down()
            page.mouse.move(mx + 60, my + 25, steps=5)
            page.mouse.up()
            panned = page.evaluate("window.viewer.view()")
            assert abs(panned["ox"] - after["ox"] - 60) < 1 and abs(panned["oy"] - after["oy"] - 25) < 1
            page.keyboard.press("0")  # fit again
            assert abs(page.evaluate("window.viewer.view()")["cell"] - before["cell"]) < 1e-6
            page.evaluate("window.viewer.setStep(20)")
            page.screenshot(path=str(ARTIFACTS / "viewer.png"))
            assert (ARTIFACTS / "viewer.png").stat().st_size > 10_000

            # The help overlay lists the shortcuts.
            page.keyboard.press("?")
            assert "play / pause" in page.inner_text("#help")
            page.keyboard.press("Escape")

            # A corrupt replay from a URL gets a clear on-page error.
            page.evaluate("window.viewer.loadBuffer(new Uint8Array([0x78, 0x9c, 1, 2, 3]).buffer, 'bad.json.z')")
            page.wait_for_function("window.viewer.error !== null")
            assert "cannot decompress" in page.inner_text("#status")
            # `?replay=<url>` (how other pages link to a replay) still opens it.
            page.goto(server.url + "?replay=replays/0", wait_until="load")
            page.wait_for_function("window.viewer.loaded", timeout=20000)
            assert page.evaluate("window.viewer.maxSteps") == 40

            # Served by another server (the dashboard's way: the viewer's files, an empty `api/replays`
            # and the replay at a path of its own), it asks for nothing else and names policy and simulation.
            import functools
            import shutil
            import threading
            from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

            site = tmp_path / "site"
            (site / "viewer" / "api").mkdir(parents=True)
            for name in ("index.html", "viewer.js", "viewer.css"):
                shutil.copy(STATIC_DIR / name, site / "viewer" / name)
            (site / "viewer" / "api" / "replays").write_text("[]")
            (site / "favicon.ico").write_bytes(b"")  # the browser asks for it; not the viewer's doing
            dest = site / "files" / "runA" / "v7" / "arena" / "basic" / "game0_episode2.json.z"
            dest.parent.mkdir(parents=True)
            dest.write_bytes(Path(replay_path).read_bytes())
            quiet = type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
            other = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(quiet, directory=str(site)))
            threading.Thread(target=other.serve_forever, daemon=True).start()
            try:
                page = open_viewer(browser, f"http://127.0.0.1:{other.server_address[1]}/viewer/"
                                            "?replay=%2Ffiles%2FrunA%2Fv7%2Farena%2Fbasic%2Fgame0_episode2.json.z",
                                   errors)
                assert page.evaluate("window.viewer.error") is None
                title = page.evaluate("window.viewer.title")
                assert "runA:v7" in title and "arena/basic" in title, title
            finally:
                other.shutdown()
                other.server_close()
        finally:
            browser.close()
    assert not errors, errors


def handmade_replay(num_agents: int = 30) -> dict:
    """A version-1 replay as older code wrote it (no metadata): agent 0 gains a heart at step 3, agent 1
    attacks at step 5 and agent 2 is frozen from then on; agent 4's move fails at step 2."""
    items = ["ore_red", "ore_blue", "ore_green", "battery_red", "battery_blue", "battery_green", "heart", "armor",
             "laser", "blueprint"]
    actions = ["noop", "move_north", "move_south", "move_west", "move_east", "put_items", "get_items"] + \
        [f"attack_{i}" for i in range(9)]
    objects = []
    side = 8
    for a in range(num_agents):
        obj = {"id": a, "type": 0, "type_name": "agent", "agent_id": a, "location": [1 + a % side, 1 + a // side, 0],
               "orientation": 0, "inventory": [], "action": 0, "action_success": True, "current_reward": 0,
               "total_reward": 0, "frozen": 0, "group": a % 2}
        objects.append(obj)
    objects[0]["inventory"] = [[0, []], [3, [[6, 1], [8, 2]]]]
    objects[0]["current_reward"] = [[0, 0], [3, 1], [4, 0]]
    objects[0]["total_reward"] = [[0, 0], [3, 1]]
    objects[1]["action"] = [[0, 0], [5, 7], [6, 0]]
    objects[1]["orientation"] = 1
    objects[2]["frozen"] = [[0, 0], [5, 10]]
    objects[4]["action"] = [[0, 0], [2, 1], [3, 0]]
    objects[4]["action_success"] = [[0, True], [2, False], [3, True]]
    walls = [(c, r) for c in range(side + 2) for r in range(7) if c in (0, side + 1) or r in (0, 6)]
    for i, (c, r) in enumerate(walls):
        objects.append({"id": num_agents + i, "type": 1, "type_name": "wall", "location": [c, r, 1],
                        "orientation": 0, "inventory": []})
    return {"version": 1, "action_names": actions, "item_names": items, "type_names": ["agent", "wall"],
            "map_size": [side + 2, 7], "num_agents": num_agents, "max_steps": 10, "objects": objects}


def test_viewer_events_icons_and_many_agents(tmp_path):
    import json

    sync_api = _chromium()
    path = tmp_path / "handmade.json.z"
    path.write_bytes(zlib.compress(json.dumps(handmade_replay()).encode()))
    errors: list[str] = []
    with ReplayServer([str(path)]) as server, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = open_viewer(browser, server.url, errors)
            assert page.evaluate("window.viewer.error") is None
            agents = page.evaluate("window.viewer.agents()")
            assert len(agents) == 30
            colors = [a["color"] for a in agents]
            assert len(set(colors)) == 30, "agents beyond 16 share colours"
            assert {a["team"] for a in agents} == {"team 0", "team 1"}
            assert "team 1" in page.inner_text("#agents")
            events = {e["step"]: e for e in page.evaluate("window.viewer.events")}
            assert events[3]["heart"] == 1 and events[5]["attack"] == 1 and events[5]["freeze"] == 1
            assert set(events) == {3, 5}
            # Clicking the heart's tick on the timeline jumps to step 3.
            box = page.locator("#timeline").bounding_box()
            page.mouse.click(box["x"] + 1 + (box["width"] - 2) * 3 / 10, box["y"] + box["height"] - 6)
            assert page.evaluate("window.viewer.step") == 3
            page.evaluate("window.viewer.select(0)")
            icons = page.locator("#selected-inventory img")
            assert [icons.nth(i).get_attribute("alt") for i in range(icons.count())] == ["heart", "laser"]
            # The failed move of agent 4 at step 2 is marked with a red cross beside it.
            page.evaluate("window.viewer.setZoom(48)")
            page.evaluate("window.viewer.setStep(2)")
            page.evaluate("([c, r]) => window.viewer.centerOn(c, r)", [5, 1])
            x, y = page.evaluate("([c, r]) => window.viewer.cellCenter(c, r)", [5, 1])
            cell = page.evaluate("window.viewer.cell")
            cross = canvas_pixel(page, x + cell * 0.3, y - cell * 0.3)
            assert color_close(cross, "#ff3b30", 60), cross
            page.evaluate("window.viewer.setStep(3)")
            assert not color_close(canvas_pixel(page, x + cell * 0.3, y - cell * 0.3), "#ff3b30", 60)
            page.evaluate("window.viewer.fitZoom()")
            page.evaluate("window.viewer.setStep(5)")
            page.screenshot(path=str(ARTIFACTS / "viewer-events.png"))
        finally:
            browser.close()
    assert not errors, errors
