"""MLproject entry point `tune`: a thin shim over `i2x tune` (see i2x/cli.py)."""

from pipelines import entry

if __name__ == "__main__":
    entry("tune")
