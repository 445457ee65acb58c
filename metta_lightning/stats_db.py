"""DuckDB database of evaluation episodes, and the scores computed from it (as plain SQL).

Schema (the original Metta `SimulationStatsDB`, plus `game_metrics`):

    simulations(id, name, suite, env, policy_key, policy_version, created_at, finished_at)
        one row per (policy, simulation) run; `name` is `<category>/<sim>` (e.g. `arena/basic`)
    episodes(id, simulation_id, step_count, created_at, completed_at, replay_url)
    episode_attributes(episode_id, attribute, value)   the flattened env config (JSON values), seed, ...
    agent_metrics(episode_id, agent_id, metric, value) every per-agent episode stat + `reward` (the return)
    agent_groups(episode_id, group_id, agent_id)
    agent_policies(episode_id, agent_id, policy_key, policy_version)
    game_metrics(episode_id, metric, value)            per-game stats (objects.*, tokens.*)

A metric's score for a policy on a simulation is its mean over every agent-episode that policy played
there (`normalized`: a missing metric row counts as 0, as in the original). Everything below is SQL you
can run yourself, e.g. with the duckdb CLI or `duckdb.connect("eval.duckdb").sql(...)`:

    SIMULATION_SCORES_SQL   per (policy, suite, simulation): mean of a metric (default `reward`)
    CATEGORY_SCORES_SQL     per (policy, suite, category): mean of the simulation scores of that category
    SUITE_SCORES_SQL        per (policy, suite): mean of the simulation scores of that suite
    CROSSPLAY_SQL           per (policy, opponent, suite, simulation), over the episodes they played together
                            (cross-play: `agent_policies` names more than one policy): both sides' means,
                            the policy's wins, losses and draws
    CROSSPLAY_TEAMS_SQL     per cross-play episode and policy: the mean over the agents it played (the
                            matches that `scorecard.ratings` rates)

The first three score each policy on the episodes it played alone: cross-play episodes do not enter them.

Databases from several runs merge with `merge([...], into=...)` (ATTACH + INSERT OR IGNORE; all ids are
UUIDs, so nothing collides).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

import duckdb
import numpy as np

__all__ = ["StatsDB", "StatsDBError", "SCHEMA", "SIMULATION_SCORES_SQL", "CATEGORY_SCORES_SQL",
           "SUITE_SCORES_SQL", "CROSSPLAY_SQL", "CROSSPLAY_TEAMS_SQL", "flatten_config", "merge", "open_db"]

TABLES = ("simulations", "episodes", "episode_attributes", "agent_metrics", "agent_groups",
          "agent_policies", "game_metrics")

SCHEMA = """
CREATE TABLE IF NOT EXISTS simulations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    suite TEXT NOT NULL,
    env TEXT NOT NULL,
    policy_key TEXT NOT NULL,
    policy_version INTEGER NOT NULL,
    created_at TIMESTAMP,
    finished_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS episodes (
    id TEXT PRIMARY KEY,
    simulation_id TEXT,
    step_count INTEGER,
    created_at TIMESTAMP,
    completed_at TIMESTAMP,
    replay_url TEXT
);
CREATE TABLE IF NOT EXISTS episode_attributes (
    episode_id TEXT NOT NULL,
    attribute TEXT NOT NULL,
    value TEXT,
    PRIMARY KEY (episode_id, attribute)
);
CREATE TABLE IF NOT EXISTS agent_metrics (
    episode_id TEXT NOT NULL,
    agent_id INTEGER NOT NULL,
    metric TEXT NOT NULL,
    value DOUBLE,
    PRIMARY KEY (episode_id, agent_id, metric)
);
CREATE TABLE IF NOT EXISTS agent_groups (
    episode_id TEXT NOT NULL,
    group_id INTEGER NOT NULL,
    agent_id INTEGER NOT NULL,
    PRIMARY KEY (episode_id, group_id, agent_id)
);
CREATE TABLE IF NOT EXISTS agent_policies (
    episode_id TEXT NOT NULL,
    agent_id INTEGER NOT NULL,
    policy_key TEXT NOT NULL,
    policy_version INTEGER NOT NULL,
    PRIMARY KEY (episode_id, agent_id)
);
CREATE TABLE IF NOT EXISTS game_metrics (
    episode_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    value DOUBLE,
    PRIMARY KEY (episode_id, metric)
);
"""

# Every agent-episode a policy played alone in a simulation (the denominator of a normalized metric).
# Cross-play episodes (more than one policy in the game) are scored by CROSSPLAY_SQL instead.
_SAMPLES = """
    SELECT s.policy_key, s.policy_version, s.suite, s.name AS simulation, e.id AS episode_id, ap.agent_id
    FROM agent_policies ap
    JOIN episodes e ON e.id = ap.episode_id
    JOIN simulations s ON s.id = e.simulation_id
    WHERE ap.episode_id NOT IN (SELECT episode_id FROM agent_policies GROUP BY episode_id
                                HAVING COUNT(DISTINCT (policy_key, policy_version)) > 1)
"""

# Per episode with more than one policy: each policy's mean of the metric over the agents it played.
CROSSPLAY_TEAMS_SQL = """
WITH mixed AS (SELECT episode_id FROM agent_policies GROUP BY episode_id
               HAVING COUNT(DISTINCT (policy_key, policy_version)) > 1)
SELECT ap.episode_id, s.suite, s.name AS simulation, e.completed_at, ap.policy_key, ap.policy_version,
       SUM(COALESCE(m.value, 0)) / COUNT(*) AS score, COUNT(*) AS num_agents
FROM agent_policies ap
JOIN mixed USING (episode_id)
JOIN episodes e ON e.id = ap.episode_id
JOIN simulations s ON s.id = e.simulation_id
LEFT JOIN agent_metrics m ON m.episode_id = ap.episode_id AND m.agent_id = ap.agent_id AND m.metric = $metric
GROUP BY ALL
ORDER BY e.completed_at, ap.episode_id, ap.policy_key, ap.policy_version
"""

# Per (policy, opponent, suite, simulation) over the episodes they played together: the policy's mean of
# the metric per agent-episode, the opponent's, and the policy's wins, losses and draws (team means).
CROSSPLAY_SQL = f"""
WITH teams AS ({CROSSPLAY_TEAMS_SQL})
SELECT a.policy_key, a.policy_version, b.policy_key AS opponent_key, b.policy_version AS opponent_version,
       a.suite, a.simulation,
       SUM(a.score * a.num_agents) / SUM(a.num_agents) AS score,
       SUM(b.score * b.num_agents) / SUM(b.num_agents) AS opponent_score,
       SUM(a.num_agents) AS num_agent_episodes,
       COUNT(*) AS num_episodes,
       COUNT(*) FILTER (WHERE a.score > b.score) AS wins,
       COUNT(*) FILTER (WHERE a.score < b.score) AS losses,
       COUNT(*) FILTER (WHERE a.score = b.score) AS draws
FROM teams a
JOIN teams b ON a.episode_id = b.episode_id
            AND (a.policy_key <> b.policy_key OR a.policy_version <> b.policy_version)
GROUP BY ALL
ORDER BY a.policy_key, a.policy_version, opponent_key, opponent_version, a.suite, a.simulation
"""

SIMULATION_SCORES_SQL = f"""
WITH samples AS ({_SAMPLES})
SELECT sp.policy_key, sp.policy_version, sp.suite, sp.simulation,
       SUM(COALESCE(m.value, 0)) / COUNT(*) AS score,
       COUNT(*) AS num_agent_episodes,
       COUNT(DISTINCT sp.episode_id) AS num_episodes
FROM samples sp
LEFT JOIN agent_metrics m
       ON m.episode_id = sp.episode_id AND m.agent_id = sp.agent_id AND m.metric = $metric
GROUP BY ALL
ORDER BY sp.policy_key, sp.policy_version, sp.suite, sp.simulation
"""

CATEGORY_SCORES_SQL = f"""
WITH sims AS ({SIMULATION_SCORES_SQL})
SELECT policy_key, policy_version, suite, split_part(simulation, '/', 1) AS category,
       AVG(score) AS score, COUNT(*) AS num_simulations
FROM sims
GROUP BY ALL
ORDER BY policy_key, policy_version, suite, category
"""

SUITE_SCORES_SQL = f"""
WITH sims AS ({SIMULATION_SCORES_SQL})
SELECT policy_key, policy_version, suite, AVG(score) AS score, COUNT(*) AS num_simulations
FROM sims
GROUP BY ALL
ORDER BY policy_key, policy_version, suite
"""


class StatsDBError(RuntimeError):
    """A database that cannot be opened, is not a stats database, or a query with bad arguments."""


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def flatten_config(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts -> `{"a.b.c": json(value)}`; lists and scalars are JSON-encoded leaves."""
    out: dict[str, str] = {}
    if isinstance(obj, Mapping):
        if not obj and prefix:
            out[prefix] = "{}"
        for k, v in obj.items():
            out.update(flatten_config(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix or "value"] = json.dumps(obj, separators=(",", ":"), default=str)
    return out


def _is_remote(uri: str) -> bool:
    return "://" in str(uri) and not str(uri).startswith("file://")


def _local_path(uri: str) -> str:
    uri = str(uri)
    return uri[len("file://"):] if uri.startswith("file://") else uri


class StatsDB:
    """One DuckDB file (or `:memory:`). Use as a context manager, or call `close()`.

    Remote URIs (`s3://...`, `memory://...`, any fsspec URL) are copied to a local temporary file on
    open and, unless `read_only`, copied back on `close()`.
    """

    def __init__(self, path: str | os.PathLike = ":memory:", read_only: bool = False) -> None:
        self.uri = str(path)
        self.read_only = read_only
        self._tmpdir: str | None = None
        local = self.uri
        if _is_remote(self.uri):
            import fsspec

            self._tmpdir = tempfile.mkdtemp(prefix="stats_db_")
            local = os.path.join(self._tmpdir, "stats.duckdb")
            fs, rpath = fsspec.core.url_to_fs(self.uri)
            if fs.exists(rpath):
                fs.get_file(rpath, local)
            elif read_only:
                raise StatsDBError(f"{self.uri}: stats database not found")
        else:
            local = _local_path(local)
            if local != ":memory:":
                if read_only and not os.path.exists(local):
                    raise StatsDBError(f"{self.uri}: stats database not found")
                if os.path.dirname(os.path.abspath(local)):
                    os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
        self.path = local
        try:
            self.con = duckdb.connect(local, read_only=read_only and local != ":memory:")
        except duckdb.Error as e:
            raise StatsDBError(f"{self.uri}: cannot open as a DuckDB stats database: {e}") from None
        if read_only:
            self._check_schema()
        else:
            try:
                self.con.execute(SCHEMA)
            except duckdb.Error as e:
                raise StatsDBError(f"{self.uri}: cannot create the stats schema: {e}") from None
            self._check_schema()

    # ------------------------------------------------------------------------------------------ lifecycle

    def _check_schema(self) -> None:
        have = {r[0] for r in self.con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}
        missing = [t for t in TABLES if t not in have]
        if missing:
            raise StatsDBError(f"{self.uri}: not a metta_lightning stats database (missing tables "
                               f"{', '.join(missing)})")

    def close(self) -> None:
        if getattr(self, "con", None) is None:
            return
        self.con.close()
        self.con = None
        if self._tmpdir is not None:
            if not self.read_only:
                import fsspec

                fs, rpath = fsspec.core.url_to_fs(self.uri)
                parent = rpath.rsplit("/", 1)[0]
                if parent and parent != rpath:
                    fs.makedirs(parent, exist_ok=True)
                fs.put_file(self.path, rpath)
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> "StatsDB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ writers

    def add_simulation(self, name: str, suite: str, env: str, policy_key: str, policy_version: int = 0,
                       sim_id: str | None = None) -> str:
        sim_id = sim_id or uuid.uuid4().hex
        self.con.execute("INSERT INTO simulations VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                         [sim_id, name, suite, env, policy_key, int(policy_version), _now()])
        return sim_id

    def finish_simulation(self, sim_id: str) -> None:
        self.con.execute("UPDATE simulations SET finished_at = ? WHERE id = ?", [_now(), sim_id])

    def add_episode(self, simulation_id: str, stats: Mapping[str, Any], policy_key: str,
                    policy_version: int = 0, attributes: Mapping[str, Any] | None = None,
                    replay_url: str | None = None, groups: Sequence[int] | None = None,
                    agent_policies: Sequence[tuple[str, int]] | None = None,
                    created_at: datetime | None = None) -> str:
        """Write one finished episode from a `MettaGrid.episode_stats()` dict:
        `{"steps", "reward": [A], "agent": {stat: [A]}, "game": {stat: float}, "env", "episode"}`.

        `attributes` (e.g. the flattened env config, `flatten_config(config.model_dump(mode="json"))`)
        go to `episode_attributes`; `groups` is each agent's group id (default 0); `agent_policies` each
        agent's `(policy_key, policy_version)` (default: every agent plays `policy_key`).
        """
        episode_id = uuid.uuid4().hex
        reward = np.asarray(stats["reward"], dtype=np.float64).reshape(-1)
        num_agents = reward.shape[0]
        now = _now()
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("INSERT INTO episodes VALUES (?, ?, ?, ?, ?, ?)",
                        [episode_id, simulation_id, int(stats.get("steps", 0)), created_at or now, now, replay_url])
            metrics = [(episode_id, a, "reward", float(reward[a])) for a in range(num_agents)]
            for name, values in stats.get("agent", {}).items():
                v = np.asarray(values, dtype=np.float64).reshape(-1)
                if v.shape[0] != num_agents:
                    raise StatsDBError(f"agent stat {name!r} has {v.shape[0]} values for {num_agents} agents")
                metrics.extend((episode_id, a, name, float(v[a])) for a in range(num_agents))
            con.executemany("INSERT INTO agent_metrics VALUES (?, ?, ?, ?)", metrics)
            game = [(episode_id, k, float(v)) for k, v in stats.get("game", {}).items()]
            if game:
                con.executemany("INSERT INTO game_metrics VALUES (?, ?, ?)", game)
            groups = list(groups) if groups is not None else [0] * num_agents
            con.executemany("INSERT INTO agent_groups VALUES (?, ?, ?)",
                            [(episode_id, int(groups[a]), a) for a in range(num_agents)])
            pols = list(agent_policies) if agent_policies is not None else [(policy_key, policy_version)] * num_agents
            con.executemany("INSERT INTO agent_policies VALUES (?, ?, ?, ?)",
                            [(episode_id, a, k, int(v)) for a, (k, v) in enumerate(pols)])
            attrs = dict(attributes or {})
            for key in ("env", "episode"):
                if key in stats:
                    attrs.setdefault(f"episode.{key}", json.dumps(int(stats[key])))
            if attrs:
                con.executemany("INSERT INTO episode_attributes VALUES (?, ?, ?)",
                                [(episode_id, k, v if isinstance(v, str) else json.dumps(v, default=str))
                                 for k, v in attrs.items()])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        return episode_id

    # ------------------------------------------------------------------------------------------ queries

    def query(self, sql: str, params: Mapping[str, Any] | Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """Run any SQL; rows as dicts."""
        cur = self.con.execute(sql, params) if params is not None else self.con.execute(sql)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]

    def metrics(self) -> list[str]:
        return [r[0] for r in self.con.execute("SELECT DISTINCT metric FROM agent_metrics ORDER BY 1").fetchall()]

    def _check_metric(self, metric: str) -> None:
        if not self.con.execute("SELECT 1 FROM agent_metrics WHERE metric = ? LIMIT 1", [metric]).fetchone():
            if self.con.execute("SELECT 1 FROM agent_metrics LIMIT 1").fetchone():
                known = self.metrics()
                raise StatsDBError(f"unknown metric {metric!r}; the database has {len(known)} metrics, e.g. "
                                   f"{', '.join(known[:12])}")

    def simulation_scores(self, metric: str = "reward") -> list[dict[str, Any]]:
        """Per (policy_key, policy_version, suite, simulation): the metric's mean per agent-episode."""
        self._check_metric(metric)
        return self.query(SIMULATION_SCORES_SQL, {"metric": metric})

    def category_scores(self, metric: str = "reward") -> list[dict[str, Any]]:
        """Per (policy, suite, category): the mean of its simulations' scores (category = name before '/')."""
        self._check_metric(metric)
        return self.query(CATEGORY_SCORES_SQL, {"metric": metric})

    def suite_scores(self, metric: str = "reward") -> list[dict[str, Any]]:
        """Per (policy, suite): the mean of its simulations' scores."""
        self._check_metric(metric)
        return self.query(SUITE_SCORES_SQL, {"metric": metric})

    def crossplay_scores(self, metric: str = "reward") -> list[dict[str, Any]]:
        """Per (policy, opponent, suite, simulation): see `CROSSPLAY_SQL`. Empty without cross-play episodes."""
        self._check_metric(metric)
        return self.query(CROSSPLAY_SQL, {"metric": metric})

    def crossplay_teams(self, metric: str = "reward") -> list[dict[str, Any]]:
        """Per cross-play episode and policy, oldest episode first: see `CROSSPLAY_TEAMS_SQL`."""
        self._check_metric(metric)
        return self.query(CROSSPLAY_TEAMS_SQL, {"metric": metric})

    def replay_urls(self, policy_key: str | None = None, simulation: str | None = None) -> list[str]:
        sql = ("SELECT DISTINCT e.replay_url FROM episodes e JOIN simulations s ON s.id = e.simulation_id "
               "WHERE e.replay_url IS NOT NULL")
        params: list[Any] = []
        if policy_key is not None:
            sql += " AND s.policy_key = ?"
            params.append(policy_key)
        if simulation is not None:
            sql += " AND s.name = ?"
            params.append(simulation)
        return [r[0] for r in self.con.execute(sql + " ORDER BY 1", params).fetchall()]

    def counts(self) -> dict[str, int]:
        return {t: self.con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}

    # ------------------------------------------------------------------------------------------ merging

    def merge_from(self, other: str | os.PathLike) -> int:
        """Insert every row of the database at `other` (a local file) not already here. Returns the number
        of episodes added."""
        other = _local_path(str(other))
        if not os.path.exists(other):
            raise StatsDBError(f"{other}: stats database not found")
        before = self.con.execute("SELECT COUNT(*) FROM episodes").fetchone()[0]
        try:
            self.con.execute("ATTACH ? AS merge_src (READ_ONLY)", [other])
        except duckdb.Error as e:
            raise StatsDBError(f"{other}: cannot open as a DuckDB stats database: {e}") from None
        try:
            have = {r[0] for r in self.con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_catalog = 'merge_src'").fetchall()}
            missing = [t for t in TABLES if t not in have and t != "game_metrics"]
            if missing:
                raise StatsDBError(f"{other}: not a metta_lightning stats database (missing tables "
                                   f"{', '.join(missing)})")
            # All tables or none: a file that fails half-way (damaged pages) leaves no partial rows behind.
            self.con.execute("BEGIN TRANSACTION")
            try:
                for t in TABLES:
                    if t in have:
                        self.con.execute(f"INSERT OR IGNORE INTO main.{t} SELECT * FROM merge_src.{t}")
                self.con.execute("COMMIT")
            except duckdb.Error as e:
                self.con.execute("ROLLBACK")
                raise StatsDBError(f"{other}: cannot read the stats database: {e}") from None
        finally:
            self.con.execute("DETACH merge_src")
        return self.con.execute("SELECT COUNT(*) FROM episodes").fetchone()[0] - before


def open_db(uris: Iterable[str | os.PathLike]) -> StatsDB:
    """Open one database read-only, or several merged into an in-memory one (for `analyze`)."""
    uris = [str(u) for u in uris]
    if not uris:
        raise StatsDBError("no stats database given")
    if len(uris) == 1:
        return StatsDB(uris[0], read_only=True)
    return merge(uris, into=":memory:")


def merge(sources: Iterable[str | os.PathLike], into: str | os.PathLike) -> StatsDB:
    """Merge several databases (local paths or fsspec URLs) into `into`; returns it open."""
    db = StatsDB(into)
    try:
        for src in sources:
            src = str(src)
            if _is_remote(src):
                with StatsDB(src, read_only=True) as remote:
                    path = remote.path
                    remote.con.close()
                    remote.con = None
                    db.merge_from(path)
                    shutil.rmtree(remote._tmpdir, ignore_errors=True)
                    remote._tmpdir = None
            else:
                db.merge_from(src)
    except Exception:
        db.close()
        raise
    return db
