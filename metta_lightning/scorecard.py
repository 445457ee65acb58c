"""Scorecard: policies x simulations from one or more stats databases.

    python -m metta_lightning analyze eval.duckdb [other.duckdb ...] [--metric heart.gained] [--out DIR]

prints the table and writes `<out>/scorecard.png` (a heatmap: one row per policy version, one column per
simulation, plus one per suite with the suite score) and `<out>/scorecard.html` (the same table with
coloured cells, the heatmap embedded, and each cell's replays). Scores are the `stats_db` SQL: a metric's
mean per agent-episode of that policy in that simulation.
"""

from __future__ import annotations

import argparse
import base64
import html
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Sequence

from .stats_db import StatsDB, StatsDBError, open_db

__all__ = ["Scorecard", "analyze", "build_scorecard", "main"]


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

    def table(self) -> str:
        head = [f"policy ({self.metric})"] + self.columns
        rows = [[p] + ["-" if math.isnan(v) else f"{v:.3f}" for v in vals] for p, vals in zip(self.policies, self.values)]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]

        def line(cells):
            return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

        return "\n".join([line(head), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def build_scorecard(db: StatsDB, metric: str = "reward") -> Scorecard:
    sims = db.simulation_scores(metric)
    if not sims:
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
                      "JOIN simulations s ON s.id = e.simulation_id WHERE e.replay_url IS NOT NULL ORDER BY 4"):
        card.replays.setdefault((f"{r['policy_key']}:v{r['policy_version']}", r["name"]), []).append(r["replay_url"])
    return card


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
    png = save_png(card, os.path.join(out_dir, f"scorecard{suffix}.png"))
    page = save_html(card, os.path.join(out_dir, f"scorecard{suffix}.html"), png, [str(u) for u in db_uris])
    if print_table:
        print(card.table())
        print(f"\nwrote {png}\nwrote {page}")
    return card, {"png": png, "html": page}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("databases", nargs="+", help="stats databases (*.duckdb; paths or fsspec URLs), merged")
    parser.add_argument("--metric", default="reward",
                        help="agent metric to score (default: reward, the episode return; e.g. heart.gained)")
    parser.add_argument("--out", default=None, help="folder for scorecard.png/.html (default: the first db's)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="metta_lightning analyze", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        analyze(args.databases, metric=args.metric, out_dir=args.out)
    except StatsDBError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
