"""The replay viewer in real headless Chromium (Debian's `chromium`, driven by Playwright).

It loads a replay written by the engine from the local server, the canvas shows the agents, moving
the step slider moves them, and the console stays clean. A screenshot is kept in `test-artifacts/`.
CI needs: `apt-get install -y chromium` and `pip install playwright` (the `test` extra).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pytest

from metta_lightning.viewer import ReplayError, ReplayServer, check_replay, find_replays, serve

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


def test_viewer_in_headless_chromium(replay_path, tmp_path):
    sync_api = _chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    with ReplayServer([replay_path]) as server, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.goto(server.url, wait_until="load")
            page.wait_for_function("window.viewer && (window.viewer.loaded || window.viewer.error)", timeout=20000)
            assert page.evaluate("window.viewer.error") is None
            assert page.evaluate("window.viewer.maxSteps") == 40
            cell = page.evaluate("window.viewer.cell")

            agents0 = page.evaluate("window.viewer.agents()")
            assert len(agents0) == 6
            for a in agents0:  # every agent is drawn in its colour at its cell's centre
                col, row = a["location"][:2]
                px = canvas_pixel(page, (col + 0.5) * cell, (row + 0.5) * cell + cell * 0.3)
                assert max(abs(p - q) for p, q in zip(px[:3], hex_rgb(a["color"]))) < 40, (a, px)

            # Move the slider (as a user would: set the value, fire `input`).
            page.eval_on_selector("#step", "(el) => { el.value = '30'; el.dispatchEvent(new Event('input')); }")
            assert page.evaluate("window.viewer.step") == 30
            assert page.inner_text("#step-label") == "step 30 / 40"
            agents30 = page.evaluate("window.viewer.agents()")
            moved = [a for a, b in zip(agents0, agents30) if a["location"] != b["location"]]
            assert moved, "no agent moved between step 0 and step 30"
            for a in agents30:
                col, row = a["location"][:2]
                px = canvas_pixel(page, (col + 0.5) * cell, (row + 0.5) * cell + cell * 0.3)
                assert max(abs(p - q) for p, q in zip(px[:3], hex_rgb(a["color"]))) < 40, (a, px)
            # A cell an agent left is no longer drawn in its colour.
            left = next((a for a, b in zip(agents0, agents30)
                         if all(b2["location"][:2] != a["location"][:2] for b2 in agents30)), None)
            if left is not None:
                col, row = left["location"][:2]
                px = canvas_pixel(page, (col + 0.5) * cell, (row + 0.5) * cell + cell * 0.3)
                assert max(abs(p - q) for p, q in zip(px[:3], hex_rgb(left["color"]))) >= 40

            # The side panel follows the selected agent; keyboard steps; play advances.
            page.evaluate("window.viewer.select(2)")
            assert "agent 2" in page.inner_text("#selected")
            page.keyboard.press("ArrowLeft")
            assert page.evaluate("window.viewer.step") == 29
            page.eval_on_selector("#speed", "(el) => { el.value = '200'; el.dispatchEvent(new Event('change')); }")
            page.click("#play")
            page.wait_for_function("window.viewer.step === 40", timeout=10000)
            page.eval_on_selector("#step", "(el) => { el.value = '20'; el.dispatchEvent(new Event('input')); }")
            page.screenshot(path=str(ARTIFACTS / "viewer.png"))
            assert (ARTIFACTS / "viewer.png").stat().st_size > 10_000

            # A corrupt replay from a URL gets a clear on-page error.
            page.evaluate("window.viewer.loadBuffer(new Uint8Array([0x78, 0x9c, 1, 2, 3]).buffer, 'bad.json.z')")
            page.wait_for_function("window.viewer.error !== null")
            assert "cannot decompress" in page.inner_text("#status")
        finally:
            browser.close()
    assert not errors, errors
