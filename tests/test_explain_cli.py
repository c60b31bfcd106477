import subprocess
import sys

import pytest

from i2x.training.checkpoints import list_checkpoints

from .conftest import ROOT, cli_env


def test_seed_and_overrides_reach_the_explain_config(smoke_run):
    import argparse

    from i2x.platform.config_io import config_from_dict
    from i2x.runs.runconfig import run_config
    from i2x.training.checkpoints import read_checkpoint

    _, _, result = smoke_run
    trained = config_from_dict(read_checkpoint(list_checkpoints(result.folder)[-1])["config"])
    args = argparse.Namespace(config="", dataset="synthetic", data_dir="", seed=5, overrides="explain.n_prototypes=6")
    cfg = run_config(args, trained)
    assert (cfg.seed, cfg.explain.n_prototypes) == (5, 6) and trained.seed != 5
    assert cfg.model == trained.model and cfg.data.name == trained.data.name


@pytest.mark.slow
def test_mlflow_run_main_smoke_trains_explains_and_tunes(tmp_path):
    env = cli_env(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(ROOT), "-P", "config=smoke", "-P", f"overrides=work_dir={tmp_path / 'work'},tune.storage=sqlite:///{tmp_path}/optuna.db",
         "--env-manager", "local"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    import mlflow
    from mlflow.tracking import MlflowClient

    from i2x.explanation.document import validate

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    by_stage = {r.data.tags.get("i2x.stage"): r for r in runs}
    assert set(by_stage) == {"main", "train", "explain", "tune", "tune-trial"}
    assert all(r.info.status == "FINISHED" for r in runs)  # a pruned trial too: tagged, not a red cross
    main, train, expl = by_stage["main"], by_stage["train"], by_stage["explain"]
    # telling names under `mlflow run` too, and the UI opens on the runs table
    assert train.info.run_name == "train synthetic cnn" and main.info.run_name == "main synthetic cnn"
    assert expl.info.run_name == "explain synthetic cnn"  # the lineage is in tags: the runs table cut longer names
    assert by_stage["tune"].info.run_name == "tune synthetic cnn"
    assert all(r.data.tags.get("mlflow.note.content") for r in (main, train, expl, by_stage["tune"]))  # every stage run has a description
    kinds = {client.get_experiment(r.info.experiment_id).tags.get("mlflow.experimentKind") for r in runs}
    assert kinds == {"custom_model_development"}
    # the parent carries the headline numbers, the verdict and a description
    assert main.data.metrics["test_accuracy"] == train.data.metrics["test_accuracy"]
    assert main.data.tags["i2x.verdict"].startswith(("tuned vs full->full over 2 seeds", "tuned is the same plan"))
    assert main.data.tags["mlflow.note.content"].startswith("model: synthetic cnn, test accuracy")
    # a log redirected to a file: no progress-bar debris, a few lines per stage, one per trial
    log = proc.stdout + proc.stderr
    assert "\r" not in log and "Downloading artifacts" not in log
    trial_lines = [line for line in log.splitlines() if line.startswith("i2x tune: trial")]
    assert len(trial_lines) == 3, log[-3000:]
    assert len(log.splitlines()) < 120, f"{len(log.splitlines())} lines:\n{log}"
    # the end says where to look
    assert "where to look:" in log and "MLflow UI:      mlflow ui --backend-store-uri" in log and "explain report: /" in log
    assert train.data.tags["mlflow.parentRunId"] == main.info.run_id == expl.data.tags["mlflow.parentRunId"]
    # the plan before the work (timed warm-up), then the real stage times beside it
    out = proc.stdout + proc.stderr
    assert "plan: cpu, cnn (width 8), 540 training images, 300 analysed" in out, out[-3000:]
    assert "stage times (estimate at start -> real): train " in out
    for name in ("train", "explain", "tune"):
        assert main.data.metrics[f"plan_{name}_s"] > 0 and main.data.metrics[f"stage_{name}_s"] > 0
    assert expl.data.tags["i2x.train_run_id"] == train.info.run_id

    def listing(run, path):
        return {a.path for a in client.list_artifacts(run.info.run_id, path)}

    steps = sorted(int(p.split("-")[1].split(".")[0]) for p in listing(train, "checkpoints") if p.endswith(".pt"))
    saliency = listing(expl, "saliency")
    assert {f"saliency/ckpt-{s:08d}.png" for s in steps} | {"saliency/maps.npz"} == saliency
    assert {"prototypes/gallery.png", "prototypes/prototypes.json"} <= listing(expl, "prototypes")
    local = mlflow.artifacts.download_artifacts(run_id=expl.info.run_id, artifact_path="explanation/explanation.json", dst_path=str(tmp_path / "dl"))
    doc = json.loads(open(local).read())
    validate(doc)
    assert doc["run"]["train_run_id"] == train.info.run_id
    for metric in ("mean_r2_heldout", "r2_class", "n_uncertain", "noise_share", "share_verified", "road_gradcam"):
        assert metric in expl.data.metrics
    import numpy as np

    tune = by_stage["tune"]
    assert tune.data.tags["mlflow.parentRunId"] == main.info.run_id and tune.info.status == "FINISHED"
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == tune.info.run_id]
    assert len(trials) >= 3 and all("optuna.trial_number" in r.data.tags for r in trials)
    summary = json.loads(open(mlflow.artifacts.download_artifacts(run_id=tune.info.run_id, artifact_path="tuning/summary.json",
                                                                 dst_path=str(tmp_path / "dl3"))).read())
    assert set(summary["strategies"]) == {"tuned", "paper", "full->full", "random-target", "full->full (1+1)"}
    assert {(v["strategy"], v["control"]) for v in summary["verdicts"]} >= {("tuned", "full->full"), ("paper", "full->full (1+1)")}
    assert all(len(s["seeds"]) == 2 and len(s["accuracy"]) == 2 for s in summary["strategies"].values())
    assert {"tuning/summary.md", "tuning/strategies.png", "tuning/optimization_history.png"} <= listing(tune, "tuning")
    assert {"report/index.html", "report/strategies.png"} <= listing(tune, "report")
    assert {"report/index.html", "report/class_prototypes.png", "report/saliency_over_training.png", "report/beta_heatmap.png",
            "report/progression.png", "report/gallery-1.png"} <= listing(expl, "report")

    npz = np.load(mlflow.artifacts.download_artifacts(run_id=expl.info.run_id, artifact_path="saliency/maps.npz", dst_path=str(tmp_path / "dl2")))
    assert npz["maps"].dtype == np.float16 and npz["maps"].shape[0] == len(steps)


def test_model_auto_passed_to_every_stage_means_what_train_chose():
    """`mlflow run` hands the same overrides to train, explain and tune; train resolved auto
    to fastnet width 32 here (no GPU), so explain must accept it, and refuse it for a CNN."""
    import argparse

    import pytest

    from i2x.platform.config_io import load_config
    from i2x.platform.errors import I2XError
    from i2x.runs.runconfig import run_config

    args = argparse.Namespace(config="", dataset="", data_dir="", seed=-1, overrides="model.name=auto")
    trained = load_config("smoke", "model.name=fastnet,model.width=32")
    assert run_config(args, trained).model == trained.model
    with pytest.raises(I2XError, match="--overrides change model, which the checkpoints fix"):
        run_config(args, load_config("smoke"))

