"""Every bad input of the hardening issue, in one table, through the real CLI.

Each row runs ``python -m i2x.cli ...`` in a fresh folder with a private MLflow store and
checks the contract of a bad input:

- exit code 2;
- one line on stderr, ``i2x: error: ...``, naming the input (the row's fragment) and what to
  do; any other stderr line is one of MLflow's own INFO log lines or an i2x progress line,
  never a warning or a traceback;
- nothing lost: a file already in the folder keeps its bytes, the store keeps its runs with
  their states, no run is left RUNNING, and an error found before any work (config, flags,
  data, checkpoints, store) opens no MLflow run;
- no password of the row reaches the output.

The rows were found by trying the pipeline with bad inputs; the comment after a row says
what it did before it was fixed where that was not one clear line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import SHARED_DATASETS, cli_env

# The other lines stderr may hold: MLflow's own INFO log and i2x's progress lines.
ALLOWED_LINE = re.compile(r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d INFO mlflow\.|i2x [\w -]+: \S+ \w+, [\dhms ]+ elapsed|i2x \w+: working)")
SECRET = "pw-1234"


@dataclass(frozen=True)
class Bad:
    """One bad input: ``argv`` with ``{NAME}`` placeholders that ``setup`` fills in."""

    name: str
    argv: list[str]
    fragment: str
    setup: Callable[[Path, pytest.FixtureRequest], dict[str, str]] | None = None
    opens_run: bool = False  # the error comes from the work itself: the run exists and ends FAILED
    env: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- setups


def _tree(root: Path, counts: dict[str, int], size: int = 16) -> Path:
    """An ImageFolder tree: ``counts[c]`` random greyscale images per class and split."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name, n in counts.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(root / split / name / f"{i}.png")
    return root


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def random_idx(tmp: Path, _request) -> dict[str, str]:
    raw = tmp / "idx" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in IDX_FILES:
        (raw / name).write_bytes(bytes(range(256)) * 20)
    return {"DIR": str(tmp / "idx")}


def truncated_idx(tmp: Path, _request) -> dict[str, str]:
    """The first 5,000 bytes of the real MNIST files: a cut-off copy (was reported as 'not found')."""
    raw = tmp / "cut" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in IDX_FILES:
        with open(SHARED_DATASETS / "MNIST" / "raw" / name, "rb") as source:
            (raw / name).write_bytes(source.read(5000))
    return {"DIR": str(tmp / "cut")}


def huge_png(tmp: Path, _request) -> dict[str, str]:
    root = _tree(tmp / "huge", {"a": 2, "b": 2})
    Image.new("L", (15000, 15000)).save(root / "train" / "a" / "huge.png")
    return {"DIR": str(root)}


def non_utf8(tmp: Path, _request) -> dict[str, str]:
    root = _tree(tmp / "nu", {"plain": 2})
    for split in ("train", "test"):
        os.makedirs(os.path.join(os.fsencode(root / split), b"caf\xe9"))
    return {"DIR": str(root)}


def empty_class(tmp: Path, _request) -> dict[str, str]:
    root = _tree(tmp / "tree", {"cat": 3, "dog": 3})
    for split in ("train", "test"):
        (root / split / "bird").mkdir()
    return {"DIR": str(root)}


def single_class(tmp: Path, _request) -> dict[str, str]:
    return {"DIR": str(_tree(tmp / "one", {"cat": 3}))}


def bad_yaml(tmp: Path, _request) -> dict[str, str]:
    (tmp / "bad.yaml").write_text("train:\n  epochs: [1\n")
    return {"FILE": str(tmp / "bad.yaml")}


def one_group_file(tmp: Path, _request) -> dict[str, str]:
    (tmp / "groups.csv").write_text("id,group\n0,water\n1,water\n")
    return {"FILE": str(tmp / "groups.csv")}


def _file(name: str, data: bytes) -> Callable[[Path, pytest.FixtureRequest], dict[str, str]]:
    def setup(tmp: Path, _request) -> dict[str, str]:
        (tmp / name).write_bytes(data)
        return {"FILE": str(tmp / name)}

    return setup


# issue 44: a 700-byte "billion laughs" printed nothing for 150 s and took 1.3 GB (its error wrote the list out)
YAML_BOMB = ("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
                                                        for p, c in zip("abcdefgh", "bcdefghi", strict=True))
             + "train:\n  epochs: *i\n").encode()
LATIN1_YAML = "# réglages\ntrain:\n  epochs: 1\n".encode("latin-1")
HUGE_FIELD = b"id,group\n0,water\n1," + b"x" * 200_000 + b"\n"
LONG_NAME = ("id,group\n0,water\n1," + "y" * 300 + "\n").encode()
NUL_NAME = b"id,group\n0,water\n1,la\x00nd\n"
SAME_METRIC = b"id,group\n0,a?b\n1,a!b\n"


def list_yaml(tmp: Path, _request) -> dict[str, str]:
    (tmp / "list.yaml").write_text("- train\n- explain\n")
    return {"FILE": str(tmp / "list.yaml")}


def _smoke_folder(request) -> Path:
    return request.getfixturevalue("smoke_run")[2].folder


def _copy_checkpoints(tmp: Path, request, name: str, count: int) -> Path:
    from i2x.training.checkpoints import list_checkpoints

    folder = tmp / name
    folder.mkdir()
    for path in list_checkpoints(_smoke_folder(request))[:count]:
        shutil.copy(path, folder / path.name)
    return folder


def smoke_checkpoints(tmp: Path, request) -> dict[str, str]:
    return {"CKPTS": str(_smoke_folder(request))}


def two_checkpoints(tmp: Path, request) -> dict[str, str]:
    return {"CKPTS": str(_copy_checkpoints(tmp, request, "two", 2))}


def pickle_checkpoint(tmp: Path, request) -> dict[str, str]:
    """A ckpt-*.pt whose pickle would run a shell command when loaded without weights_only."""
    import pickle

    folder = _copy_checkpoints(tmp, request, "evil", 3)

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp / 'PWNED'}",))

    (folder / "ckpt-99999999.pt").write_bytes(pickle.dumps(Payload(), protocol=2))  # torch.save's protocol
    return {"CKPTS": str(folder)}


def truncated_checkpoint(tmp: Path, request) -> dict[str, str]:
    folder = _copy_checkpoints(tmp, request, "cut", 3)
    last = sorted(folder.glob("ckpt-*.pt"))[-1]
    last.write_bytes(last.read_bytes()[:3000])
    return {"CKPTS": str(folder)}


def _mixed(change: dict[str, str]) -> Callable[[Path, pytest.FixtureRequest], dict[str, str]]:
    def setup(tmp: Path, request) -> dict[str, str]:
        """Three checkpoints of the smoke run and one of another run (``change``) in one folder."""
        from i2x.platform.config_io import load_config
        from i2x.training.checkpoints import list_checkpoints
        from i2x.training.data import load_data
        from i2x.training.loop import train

        folder = _copy_checkpoints(tmp, request, "mixed", 3)
        other = load_config("smoke", {**change, "train.epochs": "1", "work_dir": str(tmp)})
        train(other, load_data(other.data, other.seed, other.plant), tmp / "other", progress=False)
        theirs = list_checkpoints(tmp / "other")[3]
        shutil.copy(theirs, folder / theirs.name)
        return {"CKPTS": str(folder)}

    return setup


def other_classes(tmp: Path, _request) -> dict[str, str]:
    """4-class checkpoints and a 3-class tree: labels would index the wrong logits."""
    from i2x.platform.config_io import load_config
    from i2x.training.data import load_data
    from i2x.training.loop import train

    four, three = _tree(tmp / "four", dict.fromkeys("abcd", 30)), _tree(tmp / "three", dict.fromkeys("abc", 30))
    config = load_config("smoke", {"data.name": "imagefolder", "data.root": str(four), "train.epochs": "1",
                                   "data.analysis_size": "40", "work_dir": str(tmp / "work")})
    train(config, load_data(config.data, config.seed, config.plant), tmp / "ckpts4", progress=False)
    return {"CKPTS": str(tmp / "ckpts4"), "DIR": str(three)}


def _tracked_run(tmp: Path, tags: dict[str, str], status: str | None) -> str:
    """A run in the row's store with ``tags``, ended with ``status`` (None: left RUNNING)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db")
    experiment = client.get_experiment_by_name("i2x") or client.get_experiment(client.create_experiment("i2x"))
    run = client.create_run(experiment.experiment_id, tags=tags)
    if status:
        client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def train_run(tmp: Path, _request) -> dict[str, str]:
    return {"RUN": _tracked_run(tmp, {"i2x.stage": "train"}, "FINISHED")}


def running_explain_run(tmp: Path, _request) -> dict[str, str]:
    train_id = _tracked_run(tmp, {"i2x.stage": "train"}, "FINISHED")
    return {"RUN": _tracked_run(tmp, {"i2x.stage": "explain", "i2x.train_run_id": train_id}, None)}


def _run_with(tmp: Path, stage: str, artifact: str, text: str) -> dict[str, str]:
    """A FINISHED ``stage`` run (of a FINISHED train run) whose ``artifact`` holds ``text``."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db")
    client.create_experiment("i2x", artifact_location=(tmp / "artifacts").as_uri())
    train_id = _tracked_run(tmp, {"i2x.stage": "train"}, "FINISHED")
    run_id = _tracked_run(tmp, {"i2x.stage": stage, "i2x.train_run_id": train_id}, None)
    local = tmp / "made" / artifact
    local.parent.mkdir(parents=True)
    local.write_text(text)
    client.log_artifact(run_id, str(local), str(Path(artifact).parent))
    client.set_terminated(run_id, "FINISHED")
    return {"RUN": run_id}


def _cut_explanation(tmp: Path, _request) -> dict[str, str]:
    return _run_with(tmp, "explain", "explanation/explanation.json", '{"schema": "i2x.explanation/1.1", "classes": ["0", "1"')


def _foreign_explanation(tmp: Path, _request) -> dict[str, str]:
    return _run_with(tmp, "explain", "explanation/explanation.json", '{"schema": "something else", "rows": []}')


def _cut_summary(tmp: Path, _request) -> dict[str, str]:
    return _run_with(tmp, "tune", "tuning/summary.json", '{"act_on": "findings", "strategies": {"erm": ')


def _store_dir(tmp: Path, _request) -> dict[str, str]:
    (tmp / "store.db").mkdir()
    return {}


def _store_not_db(tmp: Path, _request) -> dict[str, str]:
    (tmp / "notes.db").write_text("these are my notes, not a database\n")
    return {}


def empty_store(tmp: Path, _request) -> dict[str, str]:
    import mlflow

    mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db").search_experiments()
    return {"DB": str(tmp / "mlflow.db")}


def read_only_store(tmp: Path, request) -> dict[str, str]:
    """The store's file may be read, not written. root ignores file modes, so as root the
    file is also made immutable (chattr +i) for the length of the row."""
    found = empty_store(tmp, request)
    db = Path(found["DB"])
    db.chmod(0o444)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(db)], check=True)
        request.addfinalizer(lambda: subprocess.run(["chattr", "-i", str(db)], check=True))
    return found


def missing_mnist(tmp: Path, _request) -> dict[str, str]:
    (tmp / "nothing").mkdir()
    return {"DIR": str(tmp / "nothing")}


# --------------------------------------------------------------------------- the table

SMOKE = ["train", "--config", "smoke", "--overrides"]

BAD_INPUTS = [
    # choices and names
    Bad("unknown dataset", ["train", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    Bad("unknown model", [*SMOKE, "model.name=vgg"], "unknown model.name 'vgg'; choose one of cnn, fastnet"),
    Bad("unknown key", [*SMOKE, "train.epochz=1"], "unknown config key 'train.epochz'"),
    Bad("unknown section", [*SMOKE, "foo.bar=1"], "unknown config key 'foo.bar' in overrides; valid keys:"),
    Bad("config not found", ["train", "--config", "nope"], "config 'nope' not found"),
    Bad("optimizer choice", [*SMOKE, "train.optimizer=adamw2"], "config key 'train.optimizer' must be one of sgd, adam, got 'adamw2'"),
    Bad("schedule choice", [*SMOKE, "train.lr_schedule=bogus"], "'train.lr_schedule' must be one of"),
    Bad("device choice", [*SMOKE, "train.device=tpu"], "config key 'train.device' must be one of auto, cpu, cuda, got 'tpu'"),
    Bad("held-out take-out choice", [*SMOKE, "tune.heldout_take_out=erase"],
        "config key 'tune.heldout_take_out' must be one of none, swap-out, blur, mean, got 'erase'"),
    Bad("unknown saliency method", [*SMOKE, "explain.method=gradkam"], "unknown explain.method 'gradkam'; choose one of"),
    Bad("unknown perturbation kind", [*SMOKE, "tune.kinds=[drop,smudge]"], "tune.kinds ['drop', 'smudge'] must be a non-empty list of"),
    Bad("override without =", [*SMOKE, "noequals"], "override 'noequals' is not key=value (example:"),
    # types and ranges (a traceback or a wrong message before)
    Bad("lr not a number", [*SMOKE, "train.lr=abc"], "config key 'train.lr' expects float, got 'abc'"),
    Bad("negative lr", [*SMOKE, "train.lr=-1"], "'train.lr' in overrides must be above 0 and at most 1,000,000, got -1.0"),  # torch ValueError traceback
    Bad("momentum above 1", [*SMOKE, "train.momentum=1.5"], "'train.momentum' in overrides must be from 0 to 1, got 1.5"),
    Bad("negative decay", [*SMOKE, "train.weight_decay=-0.1"], "'train.weight_decay' in overrides must be from 0 to 1"),
    Bad("smoothing above 1", [*SMOKE, "train.label_smoothing=2"], "'train.label_smoothing' in overrides must be at least 0 and below 1"),
    Bad("val fraction 1.5", [*SMOKE, "data.val_fraction=1.5"], "'data.val_fraction' in overrides must be between 0 and 1, both excluded"),
    Bad("bool not a bool", [*SMOKE, "data.download=maybe"], "config key 'data.download' expects bool, got 'maybe'"),
    Bad("batch size 0", [*SMOKE, "train.batch_size=0"], "'train.batch_size' in overrides must be from 1 to 1,000,000, got 0"),  # ZeroDivisionError
    Bad("epochs 0", [*SMOKE, "train.epochs=0"], "'train.epochs' in overrides must be from 1 to 10,000, got 0"),  # was an 'S3 upload failure'
    Bad("negative image size", [*SMOKE, "data.image_size=-5"], "'data.image_size' in overrides must be 0, or from 8 to 4,096"),
    Bad("negative width", [*SMOKE, "model.width=-1"], "'model.width' in overrides must be 0, or from 1 to 4,096, got -1"),
    Bad("one prototype", [*SMOKE, "explain.n_prototypes=1"], "'explain.n_prototypes' in overrides must be from 2 to 100,000, got 1"),
    Bad("CI level 1", [*SMOKE, "faithfulness.ci=1"], "'faithfulness.ci' in overrides must be between 0 and 1, both excluded"),
    Bad("huge seed", ["train", "--config", "smoke", "--seed", "99999999999999999999"], "'seed' in overrides must be from 0 to 4,294,967,295"),
    # issue 44: each of these opened a run and trained, or failed later with a traceback and a FAILED run
    Bad("negative analysis size", [*SMOKE, "data.analysis_size=-5"], "'data.analysis_size' in overrides must be 0, or at least 20, got -5"),
    Bad("negative PCA size", [*SMOKE, "explain.pca_components=-1"], "'explain.pca_components' in overrides must be from 1 to 4,096, got -1"),
    Bad("no exemplars", [*SMOKE, "explain.n_exemplars=0"], "'explain.n_exemplars' in overrides must be from 1 to 1,000, got 0"),
    Bad("no K-Means restart", [*SMOKE, "explain.kmeans_n_init=0"], "'explain.kmeans_n_init' in overrides must be from 1 to 1,000, got 0"),
    Bad("negative train limit", [*SMOKE, "data.train_limit=-1"], "'data.train_limit' in overrides must be 0, or at least 20, got -1"),
    Bad("no checkpoint fraction", [*SMOKE, "train.checkpoint_fractions=[]"], "'train.checkpoint_fractions' in overrides needs at least one value"),
    Bad("checkpoint fraction above 1", [*SMOKE, "train.checkpoint_fractions=[1.5]"],
        "every value of config key 'train.checkpoint_fractions' in overrides must be above 0 and at most 1, got 1.5"),
    Bad("NaN learning rate", [*SMOKE, "train.lr=.nan"], "'train.lr' in overrides must be a finite number, got nan"),
    Bad("infinite learning rate", [*SMOKE, "train.lr=.inf"], "'train.lr' in overrides must be a finite number, got inf"),
    Bad("log every 0 steps", [*SMOKE, "train.log_every=0"], "'train.log_every' in overrides must be from 1 to 1,000,000, got 0"),  # ZeroDivisionError
    Bad("image size 1", [*SMOKE, "data.image_size=1"], "'data.image_size' in overrides must be 0, or from 8 to 4,096, got 1"),  # "low >= high"
    Bad("tune epochs 0", [*SMOKE, "tune.epochs_choices=[0]"],
        "every value of config key 'tune.epochs_choices' in overrides must be from 1 to 1,000, got 0"),  # IndexError, FAILED tune and trials
    Bad("threshold min above max", [*SMOKE, "tune.threshold_min=0.7"],
        "tune.threshold_min must be below tune.threshold_max (got tune.threshold_min=0.7, tune.threshold_max=0.6)"),
    Bad("YAML bomb", ["train", "--config", "{FILE}"], "uses more than 20 YAML aliases", _file("bomb.yaml", YAML_BOMB)),
    Bad("Latin-1 config", ["train", "--config", "{FILE}"], "is not UTF-8 text (byte 0xe9 at offset 3); save it as UTF-8",
        _file("latin.yaml", LATIN1_YAML)),  # UnicodeDecodeError traceback
    Bad("group file with a 200 kB field", [*SMOKE, "plant.group_file={FILE}"], "is not a CSV file this reader takes (field larger than",
        _file("huge.csv", HUGE_FIELD)),  # _csv.Error traceback
    Bad("group name of 300 characters", [*SMOKE, "plant.group_file={FILE}"], "is 300 characters (at most 200)",
        _file("long.csv", LONG_NAME)),  # failed after training, on MLflow's metric name
    Bad("group name with a NUL byte", [*SMOKE, "plant.group_file={FILE}"], "holds a control character", _file("nul.csv", NUL_NAME)),
    Bad("group names of one metric name", [*SMOKE, "plant.group_file={FILE}"], "would share the MLflow metric group_accuracy/a_b",
        _file("same.csv", SAME_METRIC)),
    Bad("doctor --work with a typo", ["doctor", "--work", "mlruns/i2x-wrok"], "--work mlruns/i2x-wrok is not a folder", empty_store,
        env={"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}),  # reported "0 violation(s)"
    Bad("doctor --storage on a new path", ["doctor", "--storage", "sqlite:///new-optuna.db"], "no Optuna storage at new-optuna.db",
        empty_store, env={"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}),  # created the database
    Bad("doctor on a store that is not there", ["doctor"], "no tracking store at missing/mlflow.db: the file does not exist",
        env={"MLFLOW_TRACKING_URI": "sqlite:///missing/mlflow.db"}),  # a traceback, and the folder created
    Bad("doctor on a storage of an unknown scheme", ["doctor", "--storage", "foo://bar"], "cannot read the Optuna storage foo://bar",
        empty_store, env={"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}),  # a traceback
    Bad("doctor on a PostgreSQL server that refuses", ["doctor"], "cannot read the tracking store postgresql://127.0.0.1:1/i2x",
        env={"MLFLOW_TRACKING_URI": "postgresql://127.0.0.1:1/i2x"}),  # a 137-line traceback
    Bad("tracking server that is down", ["train", "--config", "smoke"], "the tracking server http://127.0.0.1:1 does not answer",
        env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:1"}),  # 150 s of "working" lines
    Bad("report into /proc", ["report", "--run-id", "{RUN}", "--out", "/proc/i2x-report"], "--out /proc/i2x-report cannot hold the report",
        train_run),  # traceback
    Bad("report into a folder under a file", ["report", "--run-id", "{RUN}", "--out", "A_FILE/report"],
        "--out A_FILE/report cannot hold the report (Not a directory)", train_run),
    # planted defects and groups (issue 21): refused before any run
    Bad("plant class out of range", [*SMOKE, "plant.kind=shortcut,plant.classes=[9]"], "plant.classes must be class indices in 0..3, got [9]"),
    Bad("plant share above 1", [*SMOKE, "plant.rho=1.5"], "'plant.rho' in overrides must be from 0 to 1, got 1.5"),
    Bad("group file with one group", [*SMOKE, "plant.group_file={FILE}"], "has 1 group(s); worst-group accuracy needs at least 2",
        one_group_file),
    # config files
    Bad("YAML syntax", ["train", "--config", "{FILE}"], "is not valid YAML at line 3, column 1", bad_yaml),
    Bad("YAML list", ["train", "--config", "{FILE}"], "must hold a mapping of sections, got list", list_yaml),
    # secrets in argv
    Bad("password in an override", [*SMOKE, f"tune.storage=postgresql://ana:{SECRET}@db/i2x"], "holds a password"),
    Bad("password in --storage", ["tune", "--worker", "--study", "s", "--storage", f"postgresql://ana:{SECRET}@db/i2x"], "holds a password"),
    # data
    Bad("random IDX bytes", ["train", "--dataset", "mnist", "--data-dir", "{DIR}", "--overrides", "data.download=false"],
        "are not valid (AssertionError", random_idx),  # AssertionError traceback
    Bad("truncated IDX", ["train", "--dataset", "mnist", "--data-dir", "{DIR}", "--overrides", "data.download=false"],
        "are truncated or corrupt (shape", truncated_idx),  # was 'not found'
    Bad("MNIST missing offline", ["train", "--dataset", "mnist", "--data-dir", "{DIR}", "--overrides", "data.download=false"],
        "MNIST not found under", missing_mnist),
    Bad("data dir is a file", ["train", "--dataset", "imagefolder", "--data-dir", "A_FILE"], "imagefolder needs data_dir with train/<class>/*"),
    Bad("decompression bomb", ["train", "--dataset", "imagefolder", "--data-dir", "{DIR}"],
        "is too large to decode safely (Image size (225000000 pixels)", huge_png),  # DecompressionBombError traceback
    Bad("non-UTF-8 class folder", ["train", "--dataset", "imagefolder", "--data-dir", "{DIR}"], "class folder b'caf\\xe9' under", non_utf8),
    Bad("empty class folder", ["train", "--dataset", "imagefolder", "--data-dir", "{DIR}"], "class folder(s) bird under", empty_class),
    Bad("single class", ["train", "--dataset", "imagefolder", "--data-dir", "{DIR}"], "one class folder", single_class),
    # checkpoints and explain flags
    Bad("explain without source", ["explain"], "--run-id RUN_ID or --checkpoints FOLDER"),
    Bad("checkpoint folder missing", ["explain", "--checkpoints", "/nonexistent"], "--checkpoints /nonexistent is not a folder of ckpt-*.pt files"),
    Bad("two checkpoints", ["explain", "--checkpoints", "{CKPTS}"], "found 2 checkpoint(s); I2X needs at least 3", two_checkpoints),
    Bad("malicious pickle", ["explain", "--checkpoints", "{CKPTS}"], "holds objects other than tensors and plain data", pickle_checkpoint),
    Bad("truncated checkpoint", ["explain", "--checkpoints", "{CKPTS}"], "cannot be read (RuntimeError); it is corrupt", truncated_checkpoint),
    Bad("checkpoints of two seeds", ["explain", "--checkpoints", "{CKPTS}"], "(run.seed 0 vs 7", _mixed({"seed": "7"})),  # explained as one history
    Bad("checkpoints of two widths", ["explain", "--checkpoints", "{CKPTS}"], "(model.width 8 vs 4", _mixed({"model.width": "4"})),
    Bad("--dataset against checkpoints", ["explain", "--checkpoints", "{CKPTS}", "--dataset", "mnist"],
        "--dataset mnist contradicts the checkpoints, which were trained on synthetic", smoke_checkpoints),  # was ignored
    Bad("model against checkpoints", ["explain", "--checkpoints", "{CKPTS}", "--overrides", "model.name=resnet18"],
        "--overrides change model, which the checkpoints fix", smoke_checkpoints),  # tagged resnet18, analysed the CNN
    Bad("image size against checkpoints", ["explain", "--checkpoints", "{CKPTS}", "--overrides", "data.image_size=64"],
        "--overrides change data.image_size, which the checkpoints fix", smoke_checkpoints),
    Bad("classes against checkpoints", ["explain", "--checkpoints", "{CKPTS}", "--data-dir", "{DIR}"],
        "is not what the checkpoints were trained on (classes ['a', 'b', 'c'] here, ['a', 'b', 'c', 'd'] in the checkpoints)", other_classes),
    Bad("K above locations", ["explain", "--checkpoints", "{CKPTS}", "--overrides", "explain.n_prototypes=50000"],
        "explain.n_prototypes=50000 is larger than the", smoke_checkpoints),
    Bad("missing target layer", ["explain", "--checkpoints", "{CKPTS}", "--overrides", "explain.target_layer=net.block7"],
        "target layer 'net.block7' does not exist", smoke_checkpoints),
    # runs in the store
    Bad("unknown run id", ["explain", "--run-id", "0123456789abcdef0123456789abcdef"], "does not exist in sqlite:///"),
    Bad("explain a model not in the registry", ["explain", "--run-id", "models:/no-such-model/1"], "no model 'models:/no-such-model/1' in sqlite:///"),
    Bad("explain a model URI without version", ["explain", "--run-id", "models:/mnist-cnn"], "names no version: use models:/<name>/<version>"),
    Bad("tune a model URI of another form", ["tune", "--run-id", "models:/a/b/c"], "is not a model URI this command reads"),
    Bad("tune without run", ["tune"], "--run-id EXPLAIN_RUN_ID"),
    Bad("tune from a train run", ["tune", "--run-id", "{RUN}"], "is not an i2x explain run of a tracked training run", train_run),
    Bad("tune from a RUNNING explain", ["tune", "--run-id", "{RUN}"], "is RUNNING, not FINISHED: its artifacts may be incomplete",
        running_explain_run),  # tuned from a half-uploaded run
    Bad("explain a run without checkpoints", ["explain", "--run-id", "{RUN}"], "has no checkpoints/ckpt-*.pt artifacts", train_run),
    Bad("worker without study", ["tune", "--worker"], "--worker needs --study NAME"),
    Bad("worker on a missing study", ["tune", "--worker", "--study", "nope", "--storage", "sqlite:///{FOLDER}/optuna.db"],
        "no study 'nope' in sqlite:///", lambda tmp, _request: {"FOLDER": str(tmp)}),
    Bad("report a train run", ["report", "--run-id", "{RUN}"], "is a 'train' run; reports are made for explain and tune runs", train_run),
    # issue 23: tracebacks before (the directory waited 122 s and blamed "another process")
    Bad("tracking URI of an unknown scheme", ["train", "--config", "smoke"], "has an unknown scheme 'nosuch'",
        env={"MLFLOW_TRACKING_URI": "nosuch://somewhere/mlflow"}),
    Bad("tracking store that is a directory", ["train", "--config", "smoke"], "is a directory, not an SQLite file", _store_dir,
        env={"MLFLOW_TRACKING_URI": "sqlite:///store.db"}),
    Bad("tracking store that is not a database", ["train", "--config", "smoke"], "is not an SQLite database", _store_not_db,
        env={"MLFLOW_TRACKING_URI": "sqlite:///notes.db"}),
    Bad("tracking store path component too long", ["train", "--config", "smoke"], "more than the file system allows (255)",
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{'s' * 300}/mlflow.db"}),
    # issue 23: these raised JSONDecodeError / KeyError, and tune opened a run and left it FAILED
    Bad("report an explanation cut short", ["report", "--run-id", "{RUN}"], "explanation.json of this run is damaged (JSONDecodeError",
        _cut_explanation),
    Bad("tune from an explanation cut short", ["tune", "--run-id", "{RUN}"], "explanation.json of this run is damaged (JSONDecodeError",
        _cut_explanation),
    Bad("tune from an explanation of another schema", ["tune", "--run-id", "{RUN}"], "does not match schema i2x.explanation/1.1",
        _foreign_explanation),
    Bad("report a tune summary cut short", ["report", "--run-id", "{RUN}"], "summary.json of this run is damaged (JSONDecodeError",
        _cut_summary),
    Bad("report into a file", ["report", "--run-id", "abc", "--out", "A_FILE"], "is a file; give a folder"),
    Bad("read-only store", ["train", "--config", "smoke"], "cannot be used (attempt to write a readonly database)", read_only_store),
    # issue 23: OS errors met by the work are translated too (a full disk and a read-only file system: tests/test_faults.py)
    Bad("work folder name too long", ["train", "--config", "smoke", "--overrides", f"work_dir={'w' * 300}"],
        "is longer than the file system allows; use a shorter work_dir, data_dir or report folder"),  # OSError traceback
    # the work itself
    Bad("diverging training", [*SMOKE, "train.lr=1e6,train.epochs=1"], "training diverged at step", opens_run=True),  # FINISHED with NaN
]


def _runs(tmp: Path) -> dict[str, str]:
    """Run id -> status in the row's store (empty when there is none)."""
    if not (tmp / "mlflow.db").exists():
        return {}
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return {r.info.run_id: r.info.status for r in client.search_runs(experiments)} if experiments else {}


def test_the_table_covers_at_least_forty_inputs():
    assert len(BAD_INPUTS) >= 40
    assert len({bad.name for bad in BAD_INPUTS}) == len(BAD_INPUTS)


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[bad.name for bad in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_loses_nothing(bad: Bad, tmp_path, request):
    (tmp_path / "A_FILE").write_text("keep me")
    made = bad.setup(tmp_path, request) if bad.setup else {}
    before = _runs(tmp_path)
    argv = [re.sub(r"\{(\w+)\}", lambda m: made[m.group(1)], arg) for arg in bad.argv]
    out = subprocess.run([sys.executable, "-m", "i2x.cli", *argv], cwd=tmp_path, env=cli_env(tmp_path, **bad.env),
                         capture_output=True, text=True, timeout=600)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2, out.stderr[-2000:]
    assert lines and lines[-1].startswith("i2x: error: ") and bad.fragment in lines[-1], lines[-1:]
    assert [line for line in lines[:-1] if not ALLOWED_LINE.match(line)] == [], "stderr holds more than the error line"
    assert SECRET not in out.stdout + out.stderr
    assert (tmp_path / "A_FILE").read_text() == "keep me"
    assert not (tmp_path / "PWNED").exists()  # the malicious checkpoint's payload never ran
    after = _runs(tmp_path)
    assert {run: after.get(run) for run in before} == before  # earlier runs keep their state
    new = {run: status for run, status in after.items() if run not in before}
    assert list(new.values()) == (["FAILED"] if bad.opens_run else [])


def test_a_locked_tracking_store_is_one_line(tmp_path):
    """Another process holding the SQLite store (an exclusive transaction) used to end in a
    SQLAlchemy traceback; i2x says which store and what to do, exit 2."""
    import sqlite3

    db = Path(empty_store(tmp_path, None)["DB"])
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        out = subprocess.run([sys.executable, "-m", "i2x.cli", "train", "--config", "smoke"], cwd=tmp_path,
                             env=cli_env(tmp_path), capture_output=True, text=True, timeout=600)
    finally:
        holder.close()
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith(f"i2x: error: the tracking store sqlite:///{db} cannot be used (") and "database is locked" in lines[-1]
    assert "Traceback" not in out.stderr
