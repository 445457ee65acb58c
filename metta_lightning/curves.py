"""Learning curves as PNG from a run's logs, for people without a dashboard.

Reads the run's ``metrics.csv``: the CSV log written beside W&B in the run folder
(``metta_lightning.loggers.with_csv_beside_wandb``), or a CSV logger's own, then plots the chosen metrics
against agent steps (or the logging step).

    python -m metta_lightning curves train_dir/arena -o curve.png
    python -m metta_lightning curves train_dir/smoke/version_0 --metric overview/reward --metric losses/value_loss

A path into W&B's offline logs (``train_dir/wandb/latest-run``, an ``offline-run-*`` folder, the
``wandb`` folder or its parent) is followed to the ``metrics.csv`` beside that W&B run: the run folder
whose ``hparams.yaml`` names its run id. W&B's own files are not read.

``main(argv)`` is the ``curves`` subcommand hook for the CLI dispatch.
"""

from __future__ import annotations

import csv
import glob
import math
import os
import re
from typing import Optional, Sequence

DEFAULT_METRICS = ("overview/reward", "env_agent/heart.gained", "overview/sps")
X_CANDIDATES = ("overview/agent_steps", "metric/agent_step", "agent_steps", "trainer/global_step", "step")

History = dict[str, list[tuple[float, float]]]

_EXPECTED = ("a run folder holding metrics.csv, a CSV logger folder (version_*/metrics.csv), a metrics.csv file, "
             "or a W&B run folder whose run wrote metrics.csv beside it")


# ---------------------------------------------------------------------------------------------- finding the CSV
def find_csv_files(path: str, all_segments: bool = True) -> list[str]:
    """The ``metrics.csv`` files of the run at ``path``, oldest first.

    ``path`` may be the file, a folder holding it (a run folder, a CSV logger's version folder), a CSV
    logger's root (every ``version_*`` of it, one per fit of Lightning's own ``CSVLogger``: all of them
    with ``all_segments``, else the newest), or a path into W&B's offline logs (see the module's doc).
    Raises ``FileNotFoundError`` naming ``path`` and what was expected when none is found.
    """
    if os.path.isfile(path):
        if path.endswith(".wandb"):
            return [_csv_beside_wandb(os.path.dirname(path), path)]
        if not path.endswith(".csv"):
            raise FileNotFoundError(f"{path}: not a metrics.csv (expected {_EXPECTED})")
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such file or folder (expected {_EXPECTED})")
    own = os.path.join(path, "metrics.csv")
    if os.path.isfile(own):
        return [own]
    versions = sorted(glob.glob(os.path.join(path, "version_*", "metrics.csv")), key=_version_key)
    if versions:
        return versions if all_segments else versions[-1:]
    wandb_dir = _wandb_dir_of(path)
    if wandb_dir is not None:
        return [_csv_beside_wandb(wandb_dir, path)]
    raise FileNotFoundError(f"{path}: no metrics.csv found (expected {_EXPECTED})")


def _version_key(p: str):
    v = os.path.basename(os.path.dirname(p))
    return (0, int(v.split("_")[-1])) if v.startswith("version_") and v.split("_")[-1].isdigit() else (1, v)


def _wandb_dir_of(path: str) -> Optional[str]:
    """The W&B run folder that ``path`` names (itself, ``latest-run``, or the newest run of a ``wandb``
    folder or of its parent), or None when ``path`` is not in W&B's offline logs."""
    path = os.path.realpath(path)  # latest-run is a link to the newest run folder
    if glob.glob(os.path.join(path, "run-*.wandb")):
        return path
    for wandb_dir in (path, os.path.join(path, "wandb")):
        if os.path.basename(wandb_dir) == "wandb" and os.path.isdir(wandb_dir):
            runs = glob.glob(os.path.join(wandb_dir, "*run-*", "run-*.wandb"))
            if runs:
                latest = os.path.join(wandb_dir, "latest-run")
                return os.path.realpath(latest) if os.path.isdir(latest) else \
                    os.path.dirname(max(runs, key=os.path.getmtime))
    return None


def _csv_beside_wandb(run_dir: str, given: str) -> str:
    """The ``metrics.csv`` written beside the W&B run in ``run_dir`` (``.../wandb/offline-run-<time>-<id>``):
    the one in a run folder of the W&B save dir (or of ``$METTA_DATA_DIR``) whose ``hparams.yaml`` names the
    run id (``metta_lightning.loggers.WANDB_RUN_ID_KEY``)."""
    from .checkpoint_uris import data_dir
    from .loggers import WANDB_RUN_ID_KEY

    files = glob.glob(os.path.join(run_dir, "run-*.wandb"))
    run_id = os.path.basename(files[0])[len("run-"):-len(".wandb")] if files else None
    save_dir = os.path.dirname(os.path.dirname(os.path.realpath(run_dir)))
    if run_id:
        line = re.compile(rf"^{re.escape(WANDB_RUN_ID_KEY)}: ['\"]?{re.escape(run_id)}['\"]?\s*$", re.M)
        for parent in dict.fromkeys([save_dir, os.path.realpath(data_dir())]):
            for hparams in sorted(glob.glob(os.path.join(parent, "*", "hparams.yaml"))):
                csv_path = os.path.join(os.path.dirname(hparams), "metrics.csv")
                try:
                    with open(hparams) as f:
                        found = line.search(f.read())
                except OSError:
                    continue
                if found and os.path.isfile(csv_path):
                    return csv_path
    raise FileNotFoundError(
        f"{given}: W&B run {run_id or '(unknown id)'} has no metrics.csv beside it (expected a run folder in "
        f"{save_dir} whose hparams.yaml has {WANDB_RUN_ID_KEY}: {run_id}, as runs started by "
        f"`python -m metta_lightning fit` with W&B write; W&B's own files are not read): give the run folder or "
        "its metrics.csv")


# ---------------------------------------------------------------------------------------------- reading
def read_csv_rows(path: str) -> list[dict]:
    """The rows of a ``metrics.csv``, numeric cells as floats (empty and other cells left out)."""
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            parsed = {}
            for k, v in row.items():
                if v in ("", None) or k is None:
                    continue
                try:
                    parsed[k] = float(v)
                except ValueError:
                    pass
            rows.append(parsed)
    return rows


def drop_superseded_rows(rows: Sequence[dict]) -> list[dict]:
    """The history a resumed run really has. A row whose ``step`` is below the step before it starts a resumed
    segment, which logs again the steps the killed run had logged after its last checkpoint: those earlier
    rows (step >= the resumed row's) are dropped, so the resumed run's values win."""
    out: list[dict] = []
    last_step = -math.inf
    for row in rows:
        step = row.get("step")
        if step is not None:
            if step < last_step:
                while out and out[-1].get("step", -math.inf) >= step:
                    out.pop()
            last_step = step
        out.append(row)
    return out


def load_rows(path: str, all_segments: bool = True) -> tuple[list[dict], str]:
    """All logged rows of the run at ``path`` (see :func:`find_csv_files`; steps a resumed segment logged again
    taken from it, :func:`drop_superseded_rows`) and the source kind (``"csv"``)."""
    rows: list[dict] = []
    for f in find_csv_files(path, all_segments):
        rows.extend(read_csv_rows(f))
    return drop_superseded_rows(rows), "csv"


def load_history(path: str, metrics: Sequence[str] = DEFAULT_METRICS, x_key: Optional[str] = None,
                 all_segments: bool = True) -> tuple[History, str]:
    """``({metric: [(x, y), ...]}, x_key)`` for the metrics of the run at ``path``.

    ``x_key`` defaults to the first of :data:`X_CANDIDATES` present in the logs. Rows without the x key
    take the last x seen (Lightning logs some metrics in rows of their own).
    """
    rows, _ = load_rows(path, all_segments)
    return history_from_rows(rows, metrics, x_key)


def history_from_rows(rows: Sequence[dict], metrics: Sequence[str], x_key: Optional[str] = None) -> tuple[History, str]:
    """:func:`load_history` on rows already read (in logging order)."""
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
        path: a run folder, a ``metrics.csv``, a CSV logger folder, or a path into W&B's offline logs
            (followed to the ``metrics.csv`` beside that run); see :func:`find_csv_files`.
        out_png: output file; default ``<run dir>/learning_curve.png``.
        metrics: metric names, one panel each; metrics absent from the logs are skipped.
        x_key: x-axis metric; default agent steps if logged, else the logging step.
        smooth: moving-average window (in logged points) applied to each curve.
        all_segments: a CSV logger root with one ``version_*`` per fit is drawn whole (False: the newest).
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
    """The ``curves`` command (``metta_lightning.commands.curves``)."""
    import sys

    from .commands import run_command

    return run_command(["curves", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
