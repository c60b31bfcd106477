"""Reading a configuration: named YAML files under ``configs/``, ``key=value`` overrides and
the configs stored in checkpoints, every value type- and range-checked (one line per bad
value, before any run is opened). The dataclasses themselves are in :mod:`i2x.platform.config`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from i2x.platform.config import CONFIG_DIR_ENV, RETIRED_KEYS, SECTIONS, Config
from i2x.platform.errors import I2XError
from i2x.platform.secrets import has_secret, redact


def config_dir() -> Path:
    """The folder of named configs: ``$I2X_CONFIG_DIR`` or the repo's ``configs/``."""
    env = os.environ.get(CONFIG_DIR_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "configs"


def available_configs() -> list[str]:
    return sorted(p.stem for p in config_dir().glob("*.yaml"))


def resolve_config_path(name_or_path: str) -> Path:
    """A path as given, or a name under ``configs/`` (with or without ``.yaml``)."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    named = config_dir() / f"{candidate.stem if candidate.suffix else name_or_path}.yaml"
    if named.is_file():
        return named
    raise I2XError(
        f"config '{name_or_path}' not found: give a YAML path or one of "
        f"{', '.join(available_configs()) or '(none)'} from {config_dir()}"
    )


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {name: hints[name] for name in SECTIONS}


_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check and convert ``value`` to ``annotation``; one-line error naming ``key``."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value in choices:
            return value
        raise I2XError(f"config key '{key}' must be one of {', '.join(map(str, choices))}, got {value!r}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):  # YAML 1.1 reads 1e-3 (no dot) as a string
            return float(value)
    elif annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value) if value is not None else ""
        if value is None:
            return ""
    elif origin is tuple:
        (item_type, _ellipsis) = typing.get_args(annotation)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(key, v, item_type) for v in value)
    elif isinstance(annotation, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return _coerce(key, value, option)
            except I2XError:
                continue
    type_name = getattr(annotation, "__name__", str(annotation))
    raise I2XError(f"config key '{key}' expects {type_name}, got {value!r}")


# Bounds of numeric keys (inclusive; None: open). A value outside fails at load, in one
# line, before any run is opened, instead of as a ZeroDivisionError or numpy overflow later.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "seed": (0, 2**32 - 1),
    "data.image_size": (0, 4096),
    "plant.rho": (0, 1), "plant.other": (0, 1), "plant.test": (0, 1), "plant.size": (1, 256), "plant.region": (0, 4096),
    "data.translate": (0, 16),
    "model.width": (0, 4096),
    "train.bias_lr_scale": (1e-6, None),
    "train.lookahead_every": (0, None),
    "train.lookahead_start": (0, None),
    "train.tta_level": (0, 2),
    "train.epochs": (1, None),
    "train.batch_size": (1, None),
    "train.eval_batch_size": (1, None),
    "explain.batch_size": (1, None),
    "explain.n_prototypes": (2, None),
    "explain.memory_mb": (0, None),
    "tune.n_trials": (1, None),
    "tune.seeds": (1, None),
    "tune.refit_images": (0, None),
    "tune.cue_margin": (0, 8),
    "tune.dfr_draws": (1, None),
    "train.lr": (0, None),
    "train.momentum": (0, 1),
    "train.weight_decay": (0, None),
    "train.label_smoothing": (0, 1),
    "data.val_fraction": (0, 1),
    "explain.ridge_lambda": (0, None),
    "explain.uncertain_threshold": (0, 1),
    "explain.null_alpha": (0, 1),
    "explain.null_seed": (-1, None),
    "faithfulness.ci": (0, 1),
    "faithfulness.draws": (1, None),
    "faithfulness.uniform_draws": (1, None),
    "faithfulness.max_images": (0, None),
    "faithfulness.alpha": (0, 1),
    "faithfulness.copy_tolerance": (0, 1),
    "faithfulness.copy_min_images": (2, None),
    "faithfulness.copy_tests": (0, None),
    "faithfulness.copy_recipients": (1, None),
    "faithfulness.copy_min_push": (0, 1),
    "faithfulness.copy_permutations": (0, None),
    "tune.lr_min": (0, None),
    "tune.lr_max": (0, None),
    "tune.ci": (0, 1),
}
# Keys whose bounds above are themselves invalid values (a rate of 0, a CI level of 1).
OPEN_RANGES = frozenset({"train.lr", "data.val_fraction", "explain.null_alpha", "faithfulness.ci", "faithfulness.alpha",
                         "tune.lr_min", "tune.lr_max", "tune.ci"})


def _check_range(key: str, value: Any, source: str) -> None:
    lo, hi = RANGES.get(key, (None, None))
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if key in OPEN_RANGES:
        if (lo is not None and value <= lo) or (hi is not None and value >= hi):
            bound = f"between {lo} and {hi}, both excluded" if hi is not None else f"above {lo}"
            raise I2XError(f"config key '{key}' in {source} must be {bound}, got {value}")
    elif (lo is not None and value < lo) or (hi is not None and value > hi):
        bound = f"from {lo} to {hi}" if hi is not None else f"at least {lo}"
        raise I2XError(f"config key '{key}' in {source} must be {bound}, got {value}")


def _apply(config: Config, updates: dict[str, Any], source: str) -> Config:
    """Return ``config`` with dotted ``updates`` applied, type-checked."""
    sections = _section_types()
    top_hints = typing.get_type_hints(Config)
    per_section: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for key, value in updates.items():
        head, _, tail = key.partition(".")
        if head in sections and tail:
            hints = typing.get_type_hints(sections[head])
            if tail not in hints:
                raise I2XError(
                    f"unknown config key '{key}' in {source}; keys of '{head}': "
                    f"{', '.join(hints)}"
                )
            per_section.setdefault(head, {})[tail] = _coerce(key, value, hints[tail])
            _check_range(key, per_section[head][tail], source)
            if isinstance(value, str) and has_secret(value):
                raise I2XError(f"config key '{key}' in {source} holds a password ({redact(value)}); config values are copied into "
                               f"params, checkpoints and the explanation: give the URL in the environment instead "
                               f"(tune.storage: $I2X_OPTUNA_STORAGE)")
        elif head in top_hints and head not in sections and not tail:
            top[head] = _coerce(key, value, top_hints[head])
            _check_range(key, top[head], source)
        else:
            valid = [k for k in top_hints if k not in sections] + [f"{s}.*" for s in sections]
            raise I2XError(f"unknown config key '{key}' in {source}; valid keys: {', '.join(valid)}")
    replaced = {
        name: dataclasses.replace(getattr(config, name), **values)
        for name, values in per_section.items()
    }
    return dataclasses.replace(config, **top, **replaced)


def _flatten_yaml(tree: Any, path: Path) -> dict[str, Any]:
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise I2XError(f"config file {path} must hold a mapping of sections, got {type(tree).__name__}")
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            for sub, sub_value in value.items():
                flat[f"{key}.{sub}"] = sub_value
        else:
            flat[str(key)] = value
    return flat


_OVERRIDE_SPLIT = re.compile(r",(?=\s*[A-Za-z_][\w.]*\s*=)")


def parse_overrides(text: str | None) -> dict[str, str]:
    """Parse ``"a.b=1,c.d=[0.1,0.2]"``; a comma only splits before the next ``key=``."""
    if not text or not text.strip():
        return {}
    out: dict[str, str] = {}
    for item in _OVERRIDE_SPLIT.split(text.strip()):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise I2XError(f"override '{item}' is not key=value (example: train.epochs=5)")
        out[key.strip()] = value.strip()
    return out


def _parse_value(raw: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        return raw


def load_config(
    name_or_path: str = "mnist",
    overrides: dict[str, Any] | str | None = None,
) -> Config:
    """Load a named or path config, then apply overrides.

    Args:
        name_or_path: ``mnist``, ``configs/smoke.yaml``, ...
        overrides: ``{"train.epochs": "2"}`` or the string form ``"train.epochs=2,seed=1"``.
            String values are parsed as YAML scalars/lists, then type-checked.

    A config file may hold a ``devices:`` section with ``cpu:`` and ``cuda:`` sub-sections
    (same shape as the file): the one for the device ``train.device`` resolves to is
    applied after the file and before the overrides, so the same command sizes its work to
    the machine and an override still wins.

    Returns:
        The frozen, resolved :class:`Config`.
    """
    path = resolve_config_path(name_or_path)
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise I2XError(f"config file {path} is not valid YAML{where}: {getattr(exc, 'problem', None) or str(exc).splitlines()[0]}") from exc
    per_device = tree.pop(DEVICES_KEY, None) if isinstance(tree, dict) else None
    config = _apply(Config(), _flatten_yaml(tree, path), str(path))
    if per_device:
        if not isinstance(per_device, dict) or not set(per_device) <= {"cpu", "cuda"}:
            raise I2XError(f"config file {path}: '{DEVICES_KEY}' must map cpu and/or cuda to sections, got {per_device!r}")
        asked = apply_overrides(config, overrides) if overrides else config
        kind = device_kind(asked.train.device)
        config = _apply(config, _flatten_yaml(per_device.get(kind), path), f"{path} ({DEVICES_KEY}.{kind})")
    return apply_overrides(config, overrides) if overrides else config


DEVICES_KEY = "devices"  # a config file's per-device sections, applied before the overrides


def device_kind(name: str) -> str:
    """``cpu`` or ``cuda``: what ``train.device`` resolves to on this machine."""
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if name == "cuda" else "cpu"


def apply_overrides(config: Config, overrides: dict[str, Any] | str) -> Config:
    """``config`` with ``key=value`` overrides (string values parsed as YAML, then type-checked)."""
    if isinstance(overrides, str):
        overrides = parse_overrides(overrides)
    parsed = {k: _parse_value(v) if isinstance(v, str) else v for k, v in overrides.items()}
    return _apply(config, parsed, "overrides") if parsed else config


def config_from_dict(tree: dict[str, Any]) -> Config:
    """Rebuild a :class:`Config` from :meth:`Config.to_dict` output (e.g. a checkpoint)."""
    flat = {k: v for k, v in _flatten_yaml(tree, Path("<checkpoint>")).items() if k not in RETIRED_KEYS}
    return _apply(Config(), flat, "checkpoint config")
