"""The dashboard over two real smoke runs (one logging to W&B offline, with the CSV log beside it; one to a CSV
logger) and their evaluation
databases, driven in real headless Chromium (Debian's `chromium`, through Playwright): the runs are
listed, the curves drawn are the logged points, the scorecard shows the databases' numbers, a replay link
opens the viewer, and the page follows a log that grows. Bad input (an empty folder, a damaged DuckDB file,
a damaged log, a bucket that cannot be reached) is shown in place while the rest still works; S3 sources
are read from a moto server on 127.0.0.1. Screenshots go to `test-artifacts/`."""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from metta_lightning import curves
from metta_lightning.cli import main
from metta_lightning.dashboard import DashboardServer
from metta_lightning.loggers import EXIT_CODE_KEY
from metta_lightning.stats_db import StatsDB

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def smoke_run(data: Path, run: str, logger: list[str], epochs: int, rollouts: int, opponents: list[str]) -> None:
    cfg = {"trainer": {"max_epochs": epochs, "default_root_dir": str(data / run), "callbacks": [
        {"class_path": "callbacks.checkpoint.PolicyCheckpoint", "init_args": {"epoch_interval": 1}},
        {"class_path": "callbacks.evaluate.EvaluateCallback",
         "init_args": {"suite": "smoke/basic", "epoch_interval": 1, "replay_episodes": 1, "opponents": opponents}}]},
        "data": {"rollouts_per_epoch": rollouts}}
    path = data / f"{run}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    main(["fit", "--config", str(ROOT / "configs" / "smoke.yaml"), "--config", str(path), "--run", run, *logger])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`runa` (W&B offline and the CSV log beside it, 2 epochs x 2 rollouts, also played against the random NPC
    at each evaluation) and `runb` (CSV logger, 1 epoch x 3 rollouts) in one data dir, each with checkpoints,
    eval.duckdb and replays."""
    data = tmp_path_factory.mktemp("dash") / "train_dir"
    data.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.delenv("WANDB_SILENT", raising=False)
        smoke_run(data, "runa", ["--trainer.logger", "metta_lightning.loggers.WandbLogger",
                                 "--trainer.logger.save_dir", str(data), "--trainer.logger.name", "runa"],
                  epochs=2, rollouts=2, opponents=["random"])
        import wandb

        wandb.finish()  # in a process of its own, exiting would end the W&B run
        smoke_run(data, "runb", ["--trainer.logger.init_args.save_dir", str(data),
                                 "--trainer.logger.init_args.name", "runb"], epochs=1, rollouts=3, opponents=[])
    assert list((data / "wandb").glob("offline-run-*"))  # W&B logged too
    csv_file = next((data / "runb").rglob("metrics.csv"))
    return {"data": data, "wandb_csv": data / "runa" / "metrics.csv", "csv": csv_file}


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def logged_points(rows: list[dict], metric: str) -> list[list[float]]:
    """(agent steps, value) of every row that logged `metric`, read straight from the rows."""
    pts, x = [], None
    for row in rows:
        x = float(row["overview/agent_steps"]) if row.get("overview/agent_steps") not in (None, "") else x
        if row.get(metric) not in (None, ""):
            pts.append([x, float(row[metric])])
    return sorted(pts)


def same_points(a: list, b: list) -> bool:
    return len(a) == len(b) and [v for p in a for v in p] == pytest.approx([v for p in b for v in p], rel=1e-9)


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=60) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def open_page(browser, url: str, errors: list[str]):
    page = browser.new_page(viewport={"width": 1280, "height": 1500})
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.goto(url)
    page.wait_for_function("window.dashboard && window.dashboard.loads >= 1", timeout=60_000)
    return page


def test_dashboard_in_chromium(runs, browser):
    data = runs["data"]
    errors: list[str] = []
    with DashboardServer([str(data)], refresh_s=1.0) as server:
        page = open_page(browser, server.url, errors)

        # The runs, with what their logs and folders say.
        names = page.eval_on_selector_all("#runs tbody tr", "rows => rows.map(r => r.dataset.run)")
        assert names == ["runa", "runb"]
        wb = curves.read_csv_rows(str(runs["wandb_csv"]))
        assert wb[-1][EXIT_CODE_KEY] == 0
        assert page.text_content('#runs tr[data-run="runa"] .status') == "finished"  # the log's exit row
        last_steps = [r["overview/agent_steps"] for r in wb if "overview/agent_steps" in r][-1]
        assert page.text_content('#runs tr[data-run="runa"] .agent-steps').replace(",", "") == f"{last_steps:.0f}"
        assert "runa:v2.mpt" in page.text_content('#runs tr[data-run="runa"]')
        assert "runb:v1.mpt" in page.text_content('#runs tr[data-run="runb"]')

        # The curves drawn are the logged points: the CSV beside W&B for runa, the CSV logger's for runb.
        assert page.evaluate("window.dashboard.metric") == "overview/reward"
        page.wait_for_function("Object.keys(window.dashboard.chartPoints()).length == 2")
        drawn = page.evaluate("window.dashboard.chartPoints()")
        rows_b = csv_rows(runs["csv"])
        expect_b = logged_points(rows_b, "overview/reward")
        expect_a = logged_points(csv_rows(runs["wandb_csv"]), "overview/reward")
        assert len(expect_a) >= 2 and len(expect_b) >= 2  # (a rollout with no finished episode logs no reward)
        assert same_points(drawn["runa"], expect_a) and same_points(drawn["runb"], expect_b)
        # ... and really painted: the plot canvas has pixels in both runs' colours.
        painted = page.evaluate("""() => {
            const c = document.querySelector('#chart canvas'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            const want = [[31,119,180],[214,39,40]]; const hits = [0, 0];
            for (let i = 0; i < d.length; i += 4) want.forEach((w, k) => { if (Math.abs(d[i]-w[0]) + Math.abs(d[i+1]-w[1]) + Math.abs(d[i+2]-w[2]) < 30) hits[k]++; });
            return hits; }""")
        assert all(h > 20 for h in painted), painted

        # The scorecard shows the databases' numbers: for the reward, and for the metric whose scores
        # differ most between the policies (smoke rewards are mostly 0, which would prove little).
        spread = {}
        for run in ("runa", "runb"):
            with StatsDB(data / run / "eval.duckdb", read_only=True) as db:
                for m in db.metrics():
                    spread.setdefault(m, []).extend(r["score"] for r in db.simulation_scores(m))
        varied = max(spread, key=lambda m: (len({round(v, 3) for v in spread[m]}), max(spread[m])))
        assert len({round(v, 3) for v in spread[varied]}) > 1, varied
        for metric in ("reward", varied):
            page.select_option("#score-metric", metric)
            page.wait_for_function(f"document.querySelector('#scorecard').dataset.metric === {json.dumps(metric)}")
            for run in ("runa", "runb"):
                with StatsDB(data / run / "eval.duckdb", read_only=True) as db:
                    for r in db.simulation_scores(metric):
                        label = f"{r['policy_key']}:v{r['policy_version']}"
                        cell = page.text_content(f'#scorecard tr[data-policy="{label}"] td[data-sim="{r["simulation"]}"]')
                        assert cell.strip().startswith(f"{r['score']:.3f}"), (metric, label, cell)
        page.select_option("#score-metric", "reward")
        page.wait_for_function("document.querySelector('#scorecard').dataset.metric === 'reward'")
        for run in ("runa", "runb"):
            with StatsDB(data / run / "eval.duckdb", read_only=True) as db:
                xp = db.crossplay_scores()
            if run == "runa":
                assert {(r["policy_key"], r["policy_version"], r["opponent_key"]) for r in xp} >= {
                    ("runa", 2, "random"), ("random", 0, "runa")}
                for r in xp:
                    label, opp = f"{r['policy_key']}:v{r['policy_version']}", f"{r['opponent_key']}:v{r['opponent_version']}"
                    cell = page.text_content(f'#crossplay tr[data-policy="{label}"] td[data-opponent="{opp}"]')
                    assert cell.strip().removesuffix("▶") == f"{r['score']:.3f}", (label, opp, cell)
        xp_link = page.get_attribute('#crossplay tr[data-policy="runa:v2"] td[data-opponent="random:v0"] a.replay', "href")
        assert "crossplay" in xp_link and "runa_v2_vs_random_v0" in xp_link  # that match's own replay
        rated = page.eval_on_selector_all("#ratings tbody tr", "rows => rows.map(r => r.dataset.policy)")
        assert set(rated) == {"runa:v1", "runa:v2", "random:v0"}
        from metta_lightning.scorecard import build_crossplay

        with StatsDB(data / "runa" / "eval.duckdb", read_only=True) as db:  # the only database with matches
            ratings = build_crossplay(db).ratings
        assert rated == [r.policy for r in ratings]
        for r in ratings:
            assert page.text_content(f'#ratings tr[data-policy="{r.policy}"] .rating') == f"{r.rating:.2f}"
        # The checkpoints table carries each checkpoint's suite score.
        with StatsDB(data / "runa" / "eval.duckdb", read_only=True) as db:
            v2 = next(r["score"] for r in db.suite_scores() if r["policy_version"] == 2)
        assert page.text_content('table[data-run="runa"] tr[data-checkpoint="runa:v2.mpt"] td[data-suite="smoke"]') \
            == f"{v2:.3f}"
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

        # The page follows a run that is still logging: a new CSV row shows up at the next refresh.
        fields = list(rows_b[0])
        extra = {k: "" for k in fields}
        extra.update({"overview/agent_steps": "999999", "overview/reward": "0.777", "step": "99"})
        with open(runs["csv"], "a", newline="") as f:
            csv.DictWriter(f, fieldnames=fields).writerow(extra)
        page.wait_for_function("(window.dashboard.chartPoints().runb || []).some(p => p[0] === 999999 && "
                               "Math.abs(p[1] - 0.777) < 1e-9)", timeout=30_000)
        # The runs table refreshes on its own poll, maybe a beat after the chart.
        page.wait_for_function("document.querySelector('#runs tr[data-run=\"runb\"] .agent-steps')"
                               ".textContent === '999,999'", timeout=30_000)

        # A replay link opens the viewer (its own page, through its ?replay= interface) on that replay.
        link = page.get_attribute("#scorecard a.replay", "href")
        assert link.startswith("viewer/?replay=")
        with page.context.expect_page() as new:
            page.click("#scorecard a.replay")
        viewer = new.value
        viewer.wait_for_function("window.viewer && (window.viewer.loaded || window.viewer.error)", timeout=60_000)
        assert viewer.evaluate("window.viewer.error") in (None, "")
        assert viewer.evaluate("window.viewer.loaded") and viewer.evaluate("window.viewer.agents().length") == 4
        viewer.screenshot(path=str(ARTIFACTS / "dashboard_replay.png"))
        viewer.close()
        page.close()
    assert not [e for e in errors if "favicon" not in e], errors


def test_replay_endpoint_serves_only_the_served_folders(runs):
    data = runs["data"]
    replay = next((data / "runa" / "replays").rglob("*.json.z"))
    with DashboardServer([str(data)]) as server:
        body = urllib.request.urlopen(server.url + "api/replay/file" + str(replay)).read()
        assert body == replay.read_bytes()
        for path, code in [("api/replay/file/etc/passwd", 403), ("api/replay/file" + str(data / "nope.json.z"), 404),
                           ("viewer/__init__.py", 404)]:
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(server.url + path)
            assert e.value.code == code, path


def test_bad_input_is_shown_in_place(runs, browser, tmp_path, moto_s3, s3_bucket, monkeypatch):
    """An empty folder, a run with a damaged DuckDB file and a damaged CSV log, an S3 bucket that answers
    (the good run, uploaded) and one whose server is down: every error is on the page where its data would
    be, and the good runs are still listed and scored."""
    import fsspec

    monkeypatch.setitem(fsspec.config.conf, "s3", moto_s3.storage_options)
    data = runs["data"]
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = tmp_path / "bad"
    (bad / "broken" / "checkpoints").mkdir(parents=True)
    (bad / "broken" / "eval.duckdb").write_bytes(b"this is not a duckdb file" * 100)
    (bad / "broken" / "version_0").mkdir()
    (bad / "broken" / "version_0" / "metrics.csv").write_bytes(b"\x00\x01\x02garbage\x00\n\x00\xff")
    shutil.copytree(data / "runb", bad / "runb")  # a good run beside the broken one
    fs = moto_s3.fs()  # runa's folder with its CSV log, as UploadCallback would leave it
    fs.put(str(data / "runa"), f"{s3_bucket}/metta/runa", recursive=True)
    sources = [str(empty), str(bad), f"s3://{s3_bucket}/metta"]

    errors: list[str] = []
    with DashboardServer(sources, refresh_s=1.0) as server:
        api = get_json(server.url + "api/runs")
        assert [s["error"] for s in api["sources"]] == [None, None, None]
        listed = {(r["source"], r["name"]) for r in api["runs"]}
        assert listed == {(str(bad), "broken"), (str(bad), "runb"), (f"s3://{s3_bucket}/metta", "runa")}
        broken = next(r for r in api["runs"] if r["name"] == "broken")
        remote = next(r for r in api["runs"] if r["name"] == "runa")
        assert remote["status"] == "finished" and remote["last_checkpoint"] == "runa:v2.mpt"
        # The log read from the bucket gives the same curve as the local file.
        remote_curve = get_json(server.url + "api/curves?metric=overview/reward&run=" + urllib.request.quote(remote["id"]))
        expect = logged_points(csv_rows(runs["wandb_csv"]), "overview/reward")
        assert same_points(remote_curve["runs"][0]["points"], expect)
        card = get_json(server.url + "api/scorecard")
        bad_db = [e for e in card["errors"] if e["uri"] == str(bad / "broken" / "eval.duckdb")]
        assert len(bad_db) == 1 and "eval.duckdb" in bad_db[0]["error"]
        # The good databases (local copy and the one in the bucket) are still merged and scored.
        assert card["policies"] == ["runa:v1", "runa:v2", "runb:v1"]
        assert all(v is not None for row in card["values"] for v in row[:1])
        assert card["crossplay"] is not None and card["crossplay"]["ratings"]
        curves_api = get_json(server.url + "api/curves?metric=overview/reward&run=" + urllib.request.quote(broken["id"]))
        assert "metrics.csv" in curves_api["runs"][0]["error"]

        page = open_page(browser, server.url, errors)
        assert "eval.duckdb" in page.text_content("#score-errors")
        assert "metrics.csv" in page.text_content('#runs tr[data-run="broken"] .problems') or \
            "metrics.csv" in page.text_content("#curve-errors")
        assert page.locator("#scorecard td[data-sim]").count() >= 1
        # The replay in the bucket opens through the dashboard too (its path rebased onto the bucket).
        s3_replays = [u["uri"] for v in card["replays"].values() for u in v if u["uri"].startswith("s3://")]
        assert s3_replays, card["replays"]
        page.screenshot(path=str(ARTIFACTS / "dashboard_bad_input.png"), full_page=True)

        # The bucket's server goes down: its source shows the error, the rest still serves.
        moto_s3.stop()
        try:
            time.sleep(2.5)  # past the listing's time-to-live
            started = time.monotonic()
            api = get_json(server.url + "api/runs")
            assert time.monotonic() - started < 60
            down = api["sources"][2]
            assert down["error"] and f"s3://{s3_bucket}/metta" in down["error"], down
            assert {r["name"] for r in api["runs"]} == {"broken", "runb"}
            page.wait_for_function(f"document.querySelector('#runs-errors').textContent.includes('s3://{s3_bucket}')",
                                   timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "dashboard_bucket_down.png"), full_page=True)
        finally:
            moto_s3.start()
        page.close()  # before its server stops, or its polls fail

    # A folder with no runs at all: the page says so where the runs would be.
    with DashboardServer([str(empty)]) as server:
        page = open_page(browser, server.url, errors)
        assert "no runs found" in page.text_content("#runs-errors")
        assert page.text_content("#runs tbody") == "no runs"
        page.close()
    assert not [e for e in errors if "favicon" not in e], errors


def test_one_run_folder_and_a_database_held_open(runs):
    """A run folder given alone finds its own log (the CSV beside W&B), not the other run's; a database that a
    writer holds open is still read (the dashboard reads a copy)."""
    import duckdb

    data = runs["data"]
    writer = duckdb.connect(str(data / "runa" / "eval.duckdb"))  # as a training run's evaluation would
    try:
        with DashboardServer([str(data / "runa")]) as server:
            api = get_json(server.url + "api/runs")
            assert [r["name"] for r in api["runs"]] == ["runa"]
            assert api["runs"][0]["logs"] == [str(runs["wandb_csv"])] and api["runs"][0]["status"] == "finished"
            card = get_json(server.url + "api/scorecard")
            assert card["errors"] == [] and card["policies"] == ["runa:v1", "runa:v2"]
    finally:
        writer.close()


def test_command_line_errors(capsys, tmp_path):
    import socket

    from metta_lightning.commands import run_command

    with pytest.raises(SystemExit) as e:
        run_command(["dashboard", str(tmp_path), "--refresh", "0"])
    assert e.value.code == 2 and "--refresh 0" in capsys.readouterr().err
    with socket.socket() as taken:  # a port that is already in use: one line naming it, exit code 2
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert run_command(["dashboard", str(tmp_path), "--port", str(port), "--no-browser"]) == 2
    assert f"cannot serve on 127.0.0.1:{port}" in capsys.readouterr().err
