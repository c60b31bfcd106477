"""MLproject entry point `tune`: a thin shim over `i2x tune` (see i2x/cli.py)."""

import sys

from i2x.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
