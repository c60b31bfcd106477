"""MLproject entry point `train`: a thin shim over `i2x train` (see i2x/cli.py)."""

from pipelines import entry

if __name__ == "__main__":
    entry("train")
