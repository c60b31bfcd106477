"""MLproject entry point `main`: a thin shim over `i2x main` (see i2x/cli.py)."""

import sys

from i2x.cli import main

if __name__ == "__main__":
    sys.exit(main(["main", *sys.argv[1:]]))
