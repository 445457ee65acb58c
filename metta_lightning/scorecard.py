"""Scorecard: policies x simulations from one or more stats databases.

    python -m metta_lightning analyze eval.duckdb [other.duckdb ...] [--metric heart.gained] [--out DIR]

prints the table and writes `<out>/scorecard.png` (a heatmap: one row per policy version, one column per
simulation, plus one per suite with the suite score) and `<out>/scorecard.html` (the same table with
coloured cells, the heatmap embedded, and each cell's replays). Scores are the `stats_db` SQL: a metric's
mean per agent-episode of that policy in that simulation, over the episodes it played alone.

Cross-play episodes (`evaluate --cross-play`: several policies in one game) give the pairwise table
(row policy's mean per agent-episode against each column opponent, over every simulation they shared)
and a rating of every policy over all matches (one match = one episode, each side ranked by its agents'
mean): openskill's Plackett-Luce model (a Bayesian rating of the TrueSkill family that handles draws and
teams), episodes in the order they were played; `rating` is its conservative estimate mu - 3 sigma.
"""

from __future__ import annotations

import base64
import html
import math
import os
from dataclasses import dataclass, field
from typing import Sequence

from .stats_db import StatsDB, StatsDBError, open_db

__all__ = ["Scorecard", "CrossPlay", "Rating", "analyze", "build_scorecard", "build_crossplay", "rate_matches"]


# Episodes played by more than one policy (cross-play).
_MIXED = ("SELECT episode_id FROM agent_policies GROUP BY episode_id "
          "HAVING COUNT(DISTINCT (policy_key, policy_version)) > 1")

CROSSPLAY_REPLAYS_SQL = f"""
WITH pol AS (SELECT DISTINCT episode_id, policy_key || ':v' || policy_version AS label FROM agent_policies
             WHERE episode_id IN ({_MIXED}))
SELECT DISTINCT a.label AS policy, b.label AS opponent, e.replay_url
FROM pol a JOIN pol b ON a.episode_id = b.episode_id AND a.label <> b.label
JOIN episodes e ON e.id = a.episode_id
WHERE e.replay_url IS NOT NULL
ORDER BY 3
"""


@dataclass
class Scorecard:
    metric: str
    policies: list[str]
    """Row labels `<policy_key>:v<version>`."""
    columns: list[str]
    """Simulation names, then `<suite> (score)` per suite."""
    values: list[list[float]]
    """[policy][column]; NaN where the policy did not run that simulation."""
    replays: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    episodes: dict[tuple[str, str], int] = field(default_factory=dict)
    crossplay: "CrossPlay | None" = None
    """The pairwise table and ratings, when the databases hold cross-play episodes."""

    def table(self) -> str:
        parts = []
        if self.policies:
            head = [f"policy ({self.metric})"] + self.columns
            rows = [[p] + ["-" if math.isnan(v) else f"{v:.3f}" for v in vals]
                    for p, vals in zip(self.policies, self.values)]
            parts.append(_text_table(head, rows))
        if self.crossplay is not None:
            parts.append("cross-play:\n" + self.crossplay.table())
        return "\n\n".join(parts)


def build_scorecard(db: StatsDB, metric: str = "reward") -> Scorecard:
    sims = db.simulation_scores(metric)
    if not sims and not db.crossplay_scores(metric):
        raise StatsDBError(f"{db.uri}: the database holds no evaluated episodes")
    suites = db.suite_scores(metric)
    label = lambda r: f"{r['policy_key']}:v{r['policy_version']}"  # noqa: E731
    policies = list(dict.fromkeys(label(r) for r in sims))
    sim_names = sorted({r["simulation"] for r in sims})
    suite_names = sorted({r["suite"] for r in suites})
    columns = sim_names + [f"{s} (score)" for s in suite_names]
    index = {c: i for i, c in enumerate(columns)}
    values = [[float("nan")] * len(columns) for _ in policies]
    row = {p: i for i, p in enumerate(policies)}
    card = Scorecard(metric, policies, columns, values)
    for r in sims:
        values[row[label(r)]][index[r["simulation"]]] = float(r["score"])
        card.episodes[(label(r), r["simulation"])] = int(r["num_episodes"])
    for r in suites:
        values[row[label(r)]][index[f"{r['suite']} (score)"]] = float(r["score"])
    for r in db.query("SELECT DISTINCT s.policy_key, s.policy_version, s.name, e.replay_url FROM episodes e "
                      "JOIN simulations s ON s.id = e.simulation_id WHERE e.replay_url IS NOT NULL "
                      f"AND e.id NOT IN ({_MIXED}) ORDER BY 4"):
        card.replays.setdefault((f"{r['policy_key']}:v{r['policy_version']}", r["name"]), []).append(r["replay_url"])
    card.crossplay = build_crossplay(db, metric)
    return card


@dataclass
class Rating:
    policy: str
    mu: float
    sigma: float
    matches: int

    @property
    def rating(self) -> float:
        """The conservative estimate mu - 3 sigma (what the table sorts by)."""
        return self.mu - 3 * self.sigma


@dataclass
class CrossPlay:
    """The pairwise table: `values[i][j]` is `policies[i]`'s mean metric per agent-episode against
    `policies[j]` (NaN where they never met), with its episodes and wins/losses/draws; and the ratings."""

    metric: str
    policies: list[str]
    values: list[list[float]]
    episodes: list[list[int]]
    record: list[list[tuple[int, int, int]]]
    """[i][j] = (wins, losses, draws) of i against j, by episode."""
    ratings: list[Rating]
    """Best first."""
    replays: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    """(policy, opponent) -> replays of their matches."""

    def table(self) -> str:
        head = [f"policy vs ({self.metric})"] + self.policies
        rows = [[p] + ["-" if math.isnan(v) else f"{v:.3f}" for v in vals] for p, vals in zip(self.policies, self.values)]
        rate_head = ["policy", "rating", "mu", "sigma", "matches"]
        rate_rows = [[r.policy, f"{r.rating:.2f}", f"{r.mu:.2f}", f"{r.sigma:.2f}", str(r.matches)] for r in self.ratings]
        return _text_table(head, rows) + "\n\n" + _text_table(rate_head, rate_rows)


def _text_table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]

    def line(cells):
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(head), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def rate_matches(teams: Sequence[dict]) -> list[Rating]:
    """Ratings from `StatsDB.crossplay_teams` rows (one row per episode and policy, in play order): each
    episode is a match ranked by the sides' scores (equal scores draw). Best first."""
    from openskill.models import PlackettLuce

    model = PlackettLuce()
    ratings: dict[str, object] = {}
    played: dict[str, int] = {}
    episode: list[dict] = []

    def flush():
        if len(episode) < 2:
            return
        names = [f"{r['policy_key']}:v{r['policy_version']}" for r in episode]
        for n in names:
            ratings.setdefault(n, model.rating(name=n))
            played[n] = played.get(n, 0) + 1
        new = model.rate([[ratings[n]] for n in names], scores=[float(r["score"]) for r in episode])
        for n, (r,) in zip(names, new):
            ratings[n] = r

    for row in teams:
        if episode and row["episode_id"] != episode[0]["episode_id"]:
            flush()
            episode = []
        episode.append(row)
    flush()
    out = [Rating(n, float(r.mu), float(r.sigma), played[n]) for n, r in ratings.items()]
    return sorted(out, key=lambda r: (-r.rating, r.policy))


def build_crossplay(db: StatsDB, metric: str = "reward") -> CrossPlay | None:
    """The pairwise table and ratings from the database's cross-play episodes; None when it has none."""
    rows = db.crossplay_scores(metric)
    if not rows:
        return None
    label = lambda k, v: f"{k}:v{v}"  # noqa: E731
    policies = sorted({label(r["policy_key"], r["policy_version"]) for r in rows})
    idx = {p: i for i, p in enumerate(policies)}
    n = len(policies)
    sums = [[0.0] * n for _ in range(n)]
    agents = [[0] * n for _ in range(n)]
    episodes = [[0] * n for _ in range(n)]
    record = [[(0, 0, 0)] * n for _ in range(n)]
    for r in rows:
        i, j = idx[label(r["policy_key"], r["policy_version"])], idx[label(r["opponent_key"], r["opponent_version"])]
        sums[i][j] += float(r["score"]) * int(r["num_agent_episodes"])
        agents[i][j] += int(r["num_agent_episodes"])
        episodes[i][j] += int(r["num_episodes"])
        w, l_, d = record[i][j]
        record[i][j] = (w + int(r["wins"]), l_ + int(r["losses"]), d + int(r["draws"]))
    values = [[sums[i][j] / agents[i][j] if agents[i][j] else float("nan") for j in range(n)] for i in range(n)]
    cp = CrossPlay(metric, policies, values, episodes, record, rate_matches(db.crossplay_teams(metric)))
    for r in db.query(CROSSPLAY_REPLAYS_SQL):
        cp.replays.setdefault((r["policy"], r["opponent"]), []).append(r["replay_url"])
    return cp


def save_png(card: Scorecard, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    data = np.array(card.values, dtype=float)
    h = max(2.5, 0.55 * len(card.policies) + 1.8)
    w = max(5.0, 1.15 * len(card.columns) + 2.5)
    fig, ax = plt.subplots(figsize=(w, h))
    masked = np.ma.masked_invalid(data)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#dddddd")
    finite = data[np.isfinite(data)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    im = ax.imshow(masked, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(card.columns)), card.columns, rotation=30, ha="right")
    ax.set_yticks(range(len(card.policies)), card.policies)
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            v = data[i, j]
            if math.isfinite(v):
                bright = (v - vmin) / (vmax - vmin) > 0.6
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=9, color="black" if bright else "white")
    ax.set_title(f"Scorecard: mean {card.metric} per agent-episode")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cell_color(v: float, vmin: float, vmax: float) -> str:
    if not math.isfinite(v):
        return "#eeeeee"
    t = 0.5 if vmax == vmin else (v - vmin) / (vmax - vmin)
    # white -> green
    r, g, b = int(255 - 155 * t), int(255 - 55 * t), int(255 - 155 * t)
    return f"rgb({r},{g},{b})"


def _crossplay_html(cp: "CrossPlay | None") -> str:
    if cp is None:
        return ""
    e = html.escape
    finite = [v for row in cp.values for v in row if math.isfinite(v)]
    vmin, vmax = (min(finite), max(finite)) if finite else (0.0, 1.0)
    head = "".join(f"<th>{e(p)}</th>" for p in cp.policies)
    body = []
    for i, p in enumerate(cp.policies):
        cells = []
        for j, v in enumerate(cp.values[i]):
            w, l_, d = cp.record[i][j]
            text = "&ndash;" if not math.isfinite(v) else f"{v:.3f}"
            title = f' title="{cp.episodes[i][j]} episodes: {w} won, {l_} lost, {d} drawn"' if cp.episodes[i][j] else ""
            cells.append(f'<td style="background:{_cell_color(v, vmin, vmax)}"{title}>{text}</td>')
        body.append(f"<tr><th>{e(p)}</th>{''.join(cells)}</tr>")
    rates = "".join(f"<tr><th>{e(r.policy)}</th><td>{r.rating:.2f}</td><td>{r.mu:.2f}</td><td>{r.sigma:.2f}</td>"
                    f"<td>{r.matches}</td></tr>" for r in cp.ratings)
    return (f"<h2>Cross-play</h2><p>Row policy's mean <b>{e(cp.metric)}</b> per agent-episode against the column "
            f"opponent.</p><table><thead><tr><th>policy \\ opponent</th>{head}</tr></thead><tbody>{''.join(body)}"
            f"</tbody></table><h2>Ratings</h2><p>openskill Plackett-Luce over every cross-play episode; rating = "
            f"mu - 3 sigma.</p><table><thead><tr><th>policy</th><th>rating</th><th>mu</th><th>sigma</th>"
            f"<th>matches</th></tr></thead><tbody>{rates}</tbody></table>")


def save_html(card: Scorecard, path: str, png_path: str | None = None, sources: Sequence[str] = ()) -> str:
    finite = [v for row in card.values for v in row if math.isfinite(v)]
    vmin, vmax = (min(finite), max(finite)) if finite else (0.0, 1.0)
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in card.columns)
    body = []
    for p, vals in zip(card.policies, card.values):
        cells = []
        for c, v in zip(card.columns, vals):
            text = "&ndash;" if not math.isfinite(v) else f"{v:.3f}"
            n = card.episodes.get((p, c))
            title = f' title="{n} episodes"' if n else ""
            cells.append(f'<td style="background:{_cell_color(v, vmin, vmax)}"{title}>{text}</td>')
        body.append(f"<tr><th>{e(p)}</th>{''.join(cells)}</tr>")
    img = ""
    if png_path and os.path.exists(png_path):
        b64 = base64.b64encode(open(png_path, "rb").read()).decode()
        img = f'<h2>Heatmap</h2><img alt="scorecard heatmap" src="data:image/png;base64,{b64}">'
    replays = []
    for (p, sim), urls in sorted(card.replays.items()):
        items = "".join(f"<li><code>{e(u)}</code><br><small>view: <code>python -m metta_lightning replay "
                        f"{e(u)}</code></small></li>" for u in urls[:5])
        replays.append(f"<h3>{e(p)} &middot; {e(sim)}</h3><ul>{items}</ul>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Scorecard: {e(card.metric)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: 4px 10px; }}
td {{ text-align: right; font-family: ui-monospace, monospace; }} thead th {{ background: #f4f4f4; }}
tbody th {{ text-align: left; font-weight: normal; font-family: ui-monospace, monospace; }}
img {{ max-width: 100%; }} code {{ font-size: 12px; }}
</style></head><body>
<h1>Scorecard</h1>
<p>Mean <b>{e(card.metric)}</b> per agent-episode, per policy and simulation; <i>(score)</i> columns are the
mean over the suite's simulations. Sources: {", ".join(f"<code>{e(s)}</code>" for s in sources) or "-"}.</p>
<table><thead><tr><th>policy</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>
{img}
{_crossplay_html(card.crossplay)}
<h2>Replays</h2>{''.join(replays) or '<p>No replays recorded.</p>'}
</body></html>
"""
    with open(path, "w") as f:
        f.write(page)
    return path


def analyze(db_uris: Sequence[str], metric: str = "reward", out_dir: str | None = None,
            print_table: bool = True) -> tuple[Scorecard, dict[str, str]]:
    """Build the scorecard from the databases (merged); write PNG + HTML into `out_dir` (default: next to
    the first database). Returns the scorecard and the written paths."""
    with open_db(db_uris) as db:
        card = build_scorecard(db, metric)
    if out_dir is None:
        first = str(db_uris[0])
        out_dir = os.path.dirname(os.path.abspath(first)) if "://" not in first else "."
    os.makedirs(out_dir, exist_ok=True)
    suffix = "" if metric == "reward" else "_" + "".join(ch if ch.isalnum() else "_" for ch in metric)
    png = save_png(card, os.path.join(out_dir, f"scorecard{suffix}.png")) if card.policies else None
    page = save_html(card, os.path.join(out_dir, f"scorecard{suffix}.html"), png, [str(u) for u in db_uris])
    if print_table:
        print(card.table())
        print("".join(f"\nwrote {p}" for p in (png, page) if p))
    return card, {"png": png, "html": page}
