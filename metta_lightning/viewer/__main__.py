"""`python -m metta_lightning.viewer <replay or folder> ...` (same as `python -m metta_lightning replay`)."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
