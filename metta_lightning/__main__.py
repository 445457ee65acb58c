"""`python -m metta_lightning <subcommand> ...` (see `metta_lightning.cli`)."""

import os
import sys
import traceback

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. On a shared CPU the
# spinning threads of one process starve another's (measured 2-core VM under load: training ~10x
# slower with the default active wait). Override by setting OMP_WAIT_POLICY yourself.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


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


def _user_error(e: BaseException) -> None:
    """Bad input found before training (a size that does not divide, a value out of range, a checkpoint that
    does not load) is the user's to fix: one line naming it, not a traceback. METTA_DEBUG=1 shows it."""
    if os.environ.get("METTA_DEBUG") or _during_training(e):
        raise e
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def run() -> None:
    from pydantic import ValidationError

    from .checkpoint import CheckpointError
    from .commands import COMMANDS, run_command

    user_errors = (ValueError, CheckpointError, ValidationError, FileNotFoundError)
    argv = sys.argv[1:]
    if argv and argv[0] in COMMANDS:  # not Lightning runs: their start does not wait for Lightning's import
        try:
            sys.exit(run_command(argv))
        except user_errors as e:
            _user_error(e)
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from .cli import main

    try:
        cli = main()
        _finish_wandb(cli)
    except (*user_errors, MisconfigurationException) as e:
        _user_error(e)


if __name__ == "__main__":
    run()
