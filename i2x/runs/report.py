"""The report run: an explain or tune run's report, regenerated into a folder or the run."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from i2x.platform import tracking
from i2x.platform.errors import I2XError
from i2x.platform.process import scratch_dir

OPTUNA_FIGURES = ("optimization_history.png", "pareto_front.png", "param_importances.png")
REPAIR_FIGURES = ("repair.png", "changed.png")


def _writable(folder: Path) -> None:
    """``--out`` can hold the report, or one line (a folder under /proc, or under a file, was a traceback)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".i2x-write-probe"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise I2XError(f"--out {folder} cannot hold the report ({exc.strerror or type(exc).__name__}); give a folder you can write") from None


def report_run(args: argparse.Namespace) -> Path:
    """Regenerate the report of an explain or tune run, into ``--out`` or back into the run."""
    from i2x.reporting.html import explain_report, repair_report, tune_report
    from i2x.runs.artifacts import (
        EXPLANATION,
        MAPS,
        TUNE_SUMMARY,
        fetch_evaluation,
        read_explanation,
        read_maps,
        read_tune_summary,
    )

    if not args.run_id:
        raise I2XError("say which run to report on: --run-id RUN_ID (an explain or tune run)")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise I2XError(f"--out {args.out} is a file; give a folder (it is created if missing) so that nothing there is overwritten")
    run = tracking.get_run(args.run_id)
    stage = run.data.tags.get(tracking.TAG_STAGE)
    if args.out:
        _writable(Path(args.out))
    scratch = scratch_dir("report")
    try:
        out = Path(args.out) if args.out else scratch / "report"
        if stage == "explain":
            doc = read_explanation(tracking.download_artifacts(args.run_id, EXPLANATION, scratch))
            index = explain_report(doc, read_maps(tracking.download_artifacts(args.run_id, MAPS, scratch)), out,
                                   seed=int(doc["config"].get("seed", 0)), run_id=args.run_id,
                                   evaluation=fetch_evaluation(doc["run"].get("train_run_id"), scratch / "train-evaluation"))
        elif stage == "tune":
            summary = read_tune_summary(tracking.download_artifacts(args.run_id, TUNE_SUMMARY, scratch))
            figures = [tracking.download_artifacts(args.run_id, name, scratch) for name in tracking.list_artifacts(args.run_id, "tuning")
                       if Path(name).name in (*OPTUNA_FIGURES, *REPAIR_FIGURES)]  # drawn when the run ended
            optuna = sorted((f for f in figures if f.name in OPTUNA_FIGURES), key=lambda f: OPTUNA_FIGURES.index(f.name))
            if summary.get("act_on") == "findings":
                index = repair_report(summary, out, {"optuna": optuna, **{f.stem: f for f in figures if f.name in REPAIR_FIGURES}})
            else:
                index = tune_report(summary, out, optuna)
        else:
            raise I2XError(f"run {args.run_id} is a '{stage}' run; reports are made for explain and tune runs")
        if not args.out:
            tracking.log_artifacts_to(args.run_id, sorted(out.iterdir()), "report")
            print(f"i2x report: logged report/index.html to run {args.run_id}")
        else:
            print(f"i2x report: wrote {index}")
        return index
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
