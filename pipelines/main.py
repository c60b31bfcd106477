"""MLproject entry point `main`: a thin shim over `i2x main` (see i2x/cli.py)."""

from pipelines import entry

if __name__ == "__main__":
    entry("main")
