"""`python -m metta_lightning <subcommand> ...` (see `metta_lightning.cli`)."""

from .cli import main

if __name__ == "__main__":
    main()
