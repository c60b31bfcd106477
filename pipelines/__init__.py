"""MLproject entry points: each ``pipelines/<stage>.py`` is a thin shim over ``i2x <stage>``."""

import sys


def entry(stage: str) -> None:
    """Run ``i2x <stage>`` with this process's arguments; one line, exit 2, when the
    interpreter lacks the project's dependencies (e.g. ``.venv/bin/mlflow run`` without
    the venv on PATH runs the system python)."""
    try:
        from i2x.cli import run
    except ModuleNotFoundError as exc:
        print(f"i2x {stage}: {sys.executable} cannot import '{exc.name}': this interpreter does not have the project's "
              "dependencies; use `make run`, or `source .venv/bin/activate` and run the command again", file=sys.stderr)
        sys.exit(2)
    run([stage, *sys.argv[1:]])
