"""MLproject entry point `explain`: a thin shim over `i2x explain` (see i2x/cli.py)."""

import sys

from i2x.cli import main

if __name__ == "__main__":
    sys.exit(main(["explain", *sys.argv[1:]]))
