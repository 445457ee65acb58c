"""`python -m metta_lightning <subcommand> ...` (see `metta_lightning.cli`)."""

import os

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. On a shared CPU the
# spinning threads of one process starve another's (measured 2-core VM under load: training ~10x
# slower with the default active wait). Override by setting OMP_WAIT_POLICY yourself.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .cli import main  # noqa: E402

if __name__ == "__main__":
    main()
