"""MLproject entry point `train`: a thin shim over `i2x train` (see i2x/cli.py)."""

import sys

from i2x.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
