"""What a study prints: one line per finished trial with its ETA, and nothing of a trial a
stop ended (the CLI names the signal in one line)."""

from __future__ import annotations

import logging
import time
from typing import Any

from i2x.platform.progress import duration, say


class QuietStops(logging.Filter):
    """Drop Optuna's report of a trial ended by a stop (SIGINT/SIGTERM arrive as a
    KeyboardInterrupt): a 48-line traceback and "failed with value None", where the CLI
    prints one line naming the signal. Failures of any other kind are still logged."""

    def __init__(self) -> None:
        super().__init__()
        self.stopped: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            self.stopped.add(message.split(" failed", 1)[0])  # "Trial 3"
            return False
        trial = message.split(" failed", 1)[0]
        if " failed with value " in message and trial in self.stopped:
            self.stopped.discard(trial)  # one report per stop: another study's trial of that number in this process is its own
            return False
        return True


class TrialLines:
    """One line per finished trial: n of N, its parameters, its values or PRUNED, and the
    study's ETA from this process's mean trial time (Optuna's own bar is off)."""

    def __init__(self, n_trials: int, names: tuple[str, ...] = ()) -> None:
        self.n_trials, self.names, self.start = n_trials, names, time.perf_counter()
        self.here = 0

    def __call__(self, study: Any, trial: Any) -> None:
        from optuna.trial import TrialState

        self.here += 1
        finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        params = " ".join(f"{k}={_short(v)}" for k, v in sorted(trial.params.items()))
        if trial.state == TrialState.COMPLETE:
            outcome = ", ".join(f"{name} {v:.4g}" for name, v in zip(study.metric_names or self.names, trial.values, strict=False))
        else:
            outcome = trial.state.name
        per_trial = (time.perf_counter() - self.start) / self.here
        eta = duration(per_trial * max(0, self.n_trials - finished))
        say(f"i2x tune: trial {trial.number + 1} ({finished}/{self.n_trials} done): {params} -> {outcome}; "
            f"{duration(per_trial)}/trial, ETA {eta}")


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
