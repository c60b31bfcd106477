"""MLproject entry point `explain`: a thin shim over `i2x explain` (see i2x/cli.py)."""

from pipelines import entry

if __name__ == "__main__":
    entry("explain")
