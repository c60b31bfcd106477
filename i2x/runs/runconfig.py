"""The one place a stage's config comes from (the command line over a config).

``train`` and ``main`` start from a named config (``--config``, else the data set's own);
``explain`` and ``tune`` start from the training run's config, read from its checkpoint,
because the checkpoints fix the data, the model and the recipe. Every flag is honoured or
refused with one line; none is dropped.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

from i2x.platform.config import Config
from i2x.platform.config_io import apply_overrides, available_configs, load_config, parse_overrides
from i2x.platform.errors import I2XError
from i2x.training.loop import resolve_model

WORK_DIR_ENV = "I2X_WORK_DIR"  # the work folder, over the config's work_dir (`i2x main` sets it for its stages)
# What the checkpoints fix: an explain or tune run may not change these.
RUN_IDENTITY = ("model", "data.name", "data.image_size", "data.synthetic_per_class", "data.synthetic_confuser")


def _flags(args: argparse.Namespace) -> dict[str, str]:
    """``--data-dir``, ``--seed`` and ``--overrides`` as dotted overrides (later wins)."""
    out: dict[str, str] = {}
    if args.data_dir:
        out["data.root"] = args.data_dir
    if args.seed is not None and args.seed >= 0:
        out["seed"] = str(args.seed)
    out.update(parse_overrides(args.overrides))
    return out


def _at(d: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        d = d.get(part, {}) if isinstance(d, dict) else {}
    return d


def run_config(args: argparse.Namespace, base: Config | None = None) -> Config:
    """The config of a stage run from its flags ``--config``, ``--dataset``, ``--data-dir``,
    ``--seed`` and ``--overrides``.

    Without ``base`` (train, main): the named config (default: ``configs/<dataset>.yaml``,
    then mnist) with the flags applied; ``model.name=auto`` is left for the stage to resolve.
    With ``base``, the training run's config (explain, tune): its explain and tune sections
    and analysis size come from ``--config`` when given, then the flags; a flag that
    contradicts the checkpoints (another data set, model or image size) is refused, since the
    analysis would describe a model that was not run.
    """
    from i2x.training.data import DATASETS

    if base is None:
        if args.dataset and args.dataset not in DATASETS:
            raise I2XError(f"unknown dataset '{args.dataset}'; choose one of {', '.join(sorted(DATASETS))}")
        name = args.config or (args.dataset if args.dataset in available_configs() else "") or "mnist"
        return with_work_dir(check_registered(load_config(name, ({"data.name": args.dataset} if args.dataset else {}) | _flags(args))))
    if args.dataset and args.dataset != base.data.name:
        raise I2XError(f"--dataset {args.dataset} contradicts the checkpoints, which were trained on {base.data.name}; "
                       "drop --dataset, or explain checkpoints of that data set")
    cfg = base
    if args.config:
        chosen = load_config(args.config)
        cfg = dataclasses.replace(cfg, explain=chosen.explain, tune=chosen.tune,
                                  data=dataclasses.replace(cfg.data, analysis_size=chosen.data.analysis_size))
    cfg = resolve_model(apply_overrides(cfg, _flags(args)))  # model.name=auto passed to every stage means what train chose
    before, after = base.to_dict(), cfg.to_dict()
    changed = [key for key in RUN_IDENTITY if _at(before, key) != _at(after, key)]
    if changed:
        raise I2XError(f"--overrides change {', '.join(changed)}, which the checkpoints fix "
                       f"({', '.join(f'{k}={_at(before, k)}' for k in changed)}); drop those overrides, or train a new run with them")
    return with_work_dir(check_registered(cfg))


def with_work_dir(cfg: Config) -> Config:
    """The work folder as an absolute path: ``$I2X_WORK_DIR`` when set, else the config's
    ``work_dir``, under the folder the command runs in. ``i2x main`` resolves it where the user
    started it and passes it on, since MLflow starts each stage in the project's folder: a
    relative folder there put the work into the source checkout."""
    return dataclasses.replace(cfg, work_dir=str(Path(os.environ.get(WORK_DIR_ENV) or cfg.work_dir).expanduser().absolute()))


def check_registered(cfg: Config) -> Config:
    """Refuse names that must be keys of a registry (data set, model, saliency method,
    perturbation kinds) before any run is opened; the registries, not the config, know
    their keys."""
    from i2x.explanation.cam_methods import CAM_METHODS
    from i2x.training.data import DATASETS
    from i2x.training.models import MODELS
    from i2x.tuning.perturbation import PERTURBATIONS

    for key, value, registry, extra in (("data.name", cfg.data.name, DATASETS, ()), ("model.name", cfg.model.name, MODELS, ("auto",)),
                                        ("explain.method", cfg.explain.method, CAM_METHODS, ())):
        if value not in registry and value not in extra:
            raise I2XError(f"unknown {key} '{value}'; choose one of {', '.join([*sorted(registry), *extra])}")
    unknown = [kind for kind in cfg.tune.kinds if kind not in PERTURBATIONS]
    if unknown or not cfg.tune.kinds:
        raise I2XError(f"tune.kinds {list(cfg.tune.kinds)} must be a non-empty list of {', '.join(PERTURBATIONS)}")
    from i2x.repair.strategies import I2X_STRATEGIES

    if not cfg.tune.repair_strategies or any(s not in I2X_STRATEGIES for s in cfg.tune.repair_strategies):
        raise I2XError(f"tune.repair_strategies {list(cfg.tune.repair_strategies)} must be a non-empty list of {', '.join(I2X_STRATEGIES)}")
    return cfg
