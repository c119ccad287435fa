"""`python -m omc ...` is the `omc` command."""

import sys

from omc.cli import main

if __name__ == "__main__":
    sys.exit(main())
