"""Learning curves as PNG from a run's logs, for people without a dashboard.

Reads either a CSV logger's ``metrics.csv`` or a W&B run written offline (the ``run-<id>.wandb`` file
in ``wandb/offline-run-*``), then plots the chosen metrics against agent steps (or the global step).

    python -m metta_lightning.curves train_dir/wandb/latest-run -o curve.png
    python -m metta_lightning.curves train_dir/csv/version_0 --metric overview/reward --metric losses/value_loss

``main(argv)`` is the ``curves`` subcommand hook for the CLI dispatch.

The W&B SDK no longer ships a Python reader for its transaction log (``wandb.sdk.internal.datastore`` is
gone in wandb 0.2x/0.3x and ``wandb.Api`` only reads synced runs), so :func:`read_wandb_records` reads
the file format directly: a 7-byte header (``:W&B``, magic 0xBEE1, version 0) then LevelDB-log records in
32 KiB blocks (crc32c:4, length:2, type:1 FULL/FIRST/MIDDLE/LAST), each payload a ``wandb.proto`` Record.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import os
import struct
from collections.abc import Iterator
from typing import Optional, Sequence

DEFAULT_METRICS = ("overview/reward", "env_agent/heart.gained", "overview/sps")
X_CANDIDATES = ("overview/agent_steps", "metric/agent_step", "agent_steps", "trainer/global_step", "step", "_step")

_BLOCK = 32768
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4

History = dict[str, list[tuple[float, float]]]


# ---------------------------------------------------------------------------------------------- W&B reading
def read_wandb_records(path: str) -> Iterator["object"]:
    """Yield the ``wandb_internal_pb2.Record`` messages of a ``.wandb`` transaction log."""
    from wandb.proto import wandb_internal_pb2 as pb

    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log (bad header {data[:4]!r})")
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _HEADER:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, rtype = struct.unpack_from("<IHB", data, pos)
        pos += _HEADER
        if rtype == 0 and length == 0:  # zero padding up to the block end
            pos += _BLOCK - pos % _BLOCK if pos % _BLOCK else 0
            continue
        chunk = data[pos:pos + length]
        pos += length
        if len(chunk) < length:
            break  # truncated tail of a run that is still being written
        if rtype == _FULL:
            pending = chunk
        elif rtype == _FIRST:
            pending = chunk
            continue
        elif rtype == _MIDDLE:
            pending += chunk
            continue
        elif rtype == _LAST:
            pending += chunk
        else:
            raise ValueError(f"{path}: unknown record type {rtype} at byte {pos - length - _HEADER}")
        rec = pb.Record()
        rec.ParseFromString(pending)
        pending = b""
        yield rec


def _item_key(item) -> str:
    return item.key or "/".join(item.nested_key)


def read_wandb_run(path: str) -> dict:
    """Summarise one ``.wandb`` file: ``{"run_id", "project", "name", "history": [row dicts], "summary",
    "config", "exit_code"}`` (``exit_code`` None while the run has not ended)."""
    run_id, project, name, exit_code, rows, summary, config = None, None, None, None, [], {}, {}
    for rec in read_wandb_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "exit":
            exit_code = int(rec.exit.exit_code)
        elif kind == "run":
            run_id, project, name = rec.run.run_id, rec.run.project, rec.run.display_name or None
            for item in rec.run.config.update:
                config[_item_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            row = {_item_key(item): json.loads(item.value_json) for item in rec.history.item}
            if rec.history.HasField("step"):
                row.setdefault("_step", rec.history.step.num)
            rows.append(row)
        elif kind == "summary":
            for item in rec.summary.update:
                summary[_item_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                config[_item_key(item)] = json.loads(item.value_json)
    return {"run_id": run_id, "project": project, "name": name, "history": rows, "summary": summary,
            "config": config, "exit_code": exit_code}


def find_wandb_files(path: str, all_segments: bool = True) -> list[str]:
    """The ``.wandb`` files of a run, oldest first. ``path`` may be the file, an ``offline-run-*`` dir (or
    ``latest-run``), or a ``wandb`` dir / its parent (then the latest run). A resumed run continues its W&B
    run id in a new ``offline-run-*`` dir: with ``all_segments`` every dir of that id is taken, so the
    curve covers the whole run, not only the part after the last resume."""
    if os.path.isfile(path):
        found = [path]
    else:
        found = sorted(glob.glob(os.path.join(path, "*.wandb")))
        if not found:
            wandb_dir = path if os.path.basename(os.path.normpath(path)) == "wandb" else os.path.join(path, "wandb")
            if not glob.glob(os.path.join(wandb_dir, "*run-*", "run-*.wandb")):
                return []
            latest = os.path.join(wandb_dir, "latest-run")
            found = sorted(glob.glob(os.path.join(latest, "run-*.wandb"))) if os.path.isdir(latest) else []
            found = found or sorted(glob.glob(os.path.join(wandb_dir, "*run-*", "run-*.wandb")))[-1:]
    if not all_segments:
        return found
    run_file = os.path.realpath(found[0])  # latest-run is a link to the newest offline-run-* dir
    wandb_dir = os.path.dirname(os.path.dirname(run_file))
    # Oldest first by when each segment was last written (a segment is closed before the next one starts);
    # the folder name alone is not enough: W&B suffixes a folder started within the same second ("-1").
    segments = sorted(glob.glob(os.path.join(wandb_dir, "*run-*", os.path.basename(run_file))),
                      key=lambda p: (os.path.getmtime(p), p))
    return segments if run_file in segments else found


# ---------------------------------------------------------------------------------------------- CSV reading
def find_csv_files(path: str) -> list[str]:
    """``metrics.csv`` files under ``path`` (a file, a version dir, or a logger root), oldest version first."""
    if os.path.isfile(path):
        return [path]
    found = sorted(glob.glob(os.path.join(path, "**", "metrics.csv"), recursive=True), key=_version_key)
    return found


def _version_key(p: str):
    v = os.path.basename(os.path.dirname(p))
    return (0, int(v.split("_")[-1])) if v.startswith("version_") and v.split("_")[-1].isdigit() else (1, v)


def read_csv_rows(path: str) -> list[dict]:
    """The rows of a CSV logger's ``metrics.csv``, numeric cells as floats (empty cells left out)."""
    return _read_csv_rows(path)


def _read_csv_rows(path: str) -> list[dict]:
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            parsed = {}
            for k, v in row.items():
                if v in ("", None):
                    continue
                try:
                    parsed[k] = float(v)
                except ValueError:
                    pass
            rows.append(parsed)
    return rows


# ---------------------------------------------------------------------------------------------- history
def load_rows(path: str, all_segments: bool = True) -> tuple[list[dict], str]:
    """All logged rows of the run at ``path`` and the source kind (``"wandb"`` or ``"csv"``)."""
    wb = find_wandb_files(path, all_segments) if not path.endswith(".csv") else []
    if wb:
        rows: list[dict] = []
        for f in wb:
            rows.extend(read_wandb_run(f)["history"])
        return rows, "wandb"
    csvs = find_csv_files(path)
    if csvs:
        rows = []
        for f in csvs:
            rows.extend(_read_csv_rows(f))
        return rows, "csv"
    raise FileNotFoundError(f"no W&B run (*.wandb) or metrics.csv found at {path}")


def load_history(path: str, metrics: Sequence[str] = DEFAULT_METRICS, x_key: Optional[str] = None,
                 all_segments: bool = True) -> tuple[History, str]:
    """``({metric: [(x, y), ...]}, x_key)`` for the metrics of the run at ``path``.

    ``x_key`` defaults to the first of :data:`X_CANDIDATES` present in the logs. Rows without the x key
    take the last x seen (Lightning logs some metrics in rows of their own).
    """
    rows, _ = load_rows(path, all_segments)
    return history_from_rows(rows, metrics, x_key)


def history_from_rows(rows: Sequence[dict], metrics: Sequence[str], x_key: Optional[str] = None) -> tuple[History, str]:
    """:func:`load_history` on rows already read (W&B history rows or CSV rows, in logging order)."""
    if x_key is None:
        present = set().union(*rows) if rows else set()
        x_key = next((k for k in X_CANDIDATES if k in present), None) or "_row"
    hist: History = {m: [] for m in metrics}
    last_x = 0.0
    for i, row in enumerate(rows):
        x = row.get(x_key, i if x_key == "_row" else last_x)
        if not isinstance(x, (int, float)):
            continue
        last_x = x
        for m in metrics:
            y = row.get(m)
            if isinstance(y, (int, float)) and not isinstance(y, bool) and math.isfinite(y):
                hist[m].append((float(x), float(y)))
    return hist, x_key


def plot_learning_curve(
    path: str,
    out_png: Optional[str] = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    x_key: Optional[str] = None,
    smooth: int = 1,
    all_segments: bool = True,
) -> str:
    """Draw the learning curve of the run at ``path`` into a PNG and return its path.

    Args:
        path: a W&B offline run (file or dir), a ``wandb`` dir, a ``metrics.csv`` or a CSV logger dir.
        out_png: output file; default ``<run dir>/learning_curve.png``.
        metrics: metric names, one panel each; metrics absent from the logs are skipped.
        x_key: x-axis metric; default agent steps if logged, else the global step.
        smooth: moving-average window (in logged points) applied to each curve.
        all_segments: a W&B run resumed one or more times is drawn whole (False: only the given segment).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist, x_key = load_history(path, metrics, x_key, all_segments)
    present = [m for m in metrics if hist[m]]
    if not present:
        raise ValueError(f"none of {list(metrics)} were logged in {path}")
    if out_png is None:
        base = path if os.path.isdir(path) else os.path.dirname(path)
        out_png = os.path.join(base, "learning_curve.png")
    fig, axes = plt.subplots(len(present), 1, figsize=(8, 2.6 * len(present)), sharex=True, squeeze=False)
    for ax, m in zip(axes[:, 0], present):
        pts = sorted(hist[m])
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, ys, alpha=0.35 if smooth > 1 else 1.0, lw=1)
        if smooth > 1 and len(ys) >= smooth:
            avg = [sum(ys[i - smooth + 1:i + 1]) / smooth for i in range(smooth - 1, len(ys))]
            ax.plot(xs[smooth - 1:], avg, lw=1.8)
        ax.set_ylabel(m, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel(x_key)
    fig.suptitle(os.path.basename(os.path.normpath(path)), fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``curves`` subcommand: draw a run's learning curve as PNG."""
    p = argparse.ArgumentParser(prog="metta_lightning curves", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="W&B offline run / wandb dir / metrics.csv / CSV logger dir")
    p.add_argument("-o", "--out", default=None, help="output PNG (default: <run>/learning_curve.png)")
    p.add_argument("-m", "--metric", action="append", default=None,
                   help=f"metric to plot, repeatable (default: {', '.join(DEFAULT_METRICS)})")
    p.add_argument("-x", "--x-key", default=None, help="x-axis metric (default: agent steps or global step)")
    p.add_argument("--smooth", type=int, default=1, help="moving-average window in logged points")
    p.add_argument("--last-segment", action="store_true",
                   help="a resumed W&B run: draw only the given segment (default: the whole run, every segment)")
    p.add_argument("--list", action="store_true", help="list the logged metric names and exit")
    args = p.parse_args(argv)
    if args.list:
        rows, kind = load_rows(args.run, not args.last_segment)
        keys = sorted(set().union(*rows)) if rows else []
        print(f"{kind}: {len(rows)} rows")
        print("\n".join(keys))
        return 0
    out = plot_learning_curve(args.run, args.out, tuple(args.metric or DEFAULT_METRICS), args.x_key, args.smooth,
                              not args.last_segment)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
