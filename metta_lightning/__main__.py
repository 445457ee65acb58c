"""`python -m metta_lightning <subcommand> ...` (see `metta_lightning.cli`)."""

import os
import sys
import traceback

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. On a shared CPU the
# spinning threads of one process starve another's (measured 2-core VM under load: training ~10x
# slower with the default active wait). Override by setting OMP_WAIT_POLICY yourself.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .cli import main  # noqa: E402


def _during_training(exc: BaseException) -> bool:
    """Whether `exc` came out of Lightning's training loops (then its traceback is what a user needs)."""
    return any(f"{os.sep}loops{os.sep}" in frame.filename for frame in traceback.extract_tb(exc.__traceback__))


def _finish_wandb(cli) -> None:
    """Close the W&B run while the streams are still ours: left to W&B's exit hook, its closing lines
    (`wandb sync ...`) keep their colour codes even when the output goes to a log file."""
    logger = getattr(getattr(cli, "trainer", None), "logger", None)
    run = getattr(logger, "_experiment", None)
    if run is not None and hasattr(run, "finish"):
        run.finish()


def run() -> None:
    # Bad input found before training (a size that does not divide, a value out of range, a checkpoint
    # that does not load) is the user's to fix: one line naming it, not a traceback. METTA_DEBUG=1 shows it.
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from pydantic import ValidationError

    from .checkpoint import CheckpointError

    try:
        cli = main()
        _finish_wandb(cli)
    except (ValueError, CheckpointError, ValidationError, FileNotFoundError, MisconfigurationException) as e:
        if os.environ.get("METTA_DEBUG") or _during_training(e):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()
