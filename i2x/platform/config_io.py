"""Reading a configuration: named YAML files under ``configs/``, ``key=value`` overrides and
the configs stored in checkpoints, every value type- and range-checked (one line per bad
value, before any run is opened). The dataclasses themselves are in :mod:`i2x.platform.config`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from i2x.platform.config import CONFIG_DIR_ENV, RETIRED_KEYS, SECTIONS, Config
from i2x.platform.errors import I2XError, read_user_text
from i2x.platform.secrets import has_secret, redact
from i2x.platform.settings import bounds_of, field_problem, rule_problems


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


_SHORT = reprlib.Repr()  # Python 3.11's takes no keywords
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 6, 6, 4, 60, 60
MAX_CONFIG_BYTES = 1 << 20
MAX_ALIASES = 20  # a config needs none; a YAML "billion laughs" needs dozens


def _short(value: Any) -> str:
    """``repr`` of a value, bounded: a value built from YAML aliases can be astronomically long
    written out (a 700-byte file printed nothing for 150 s and took 1.3 GB)."""
    return _SHORT.repr(value)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, with YAML aliases counted: past :data:`MAX_ALIASES` the file is refused."""

    aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise I2XError(f"uses more than {MAX_ALIASES} YAML aliases (*name); a config needs none: write the values out")
        return super().compose_node(parent, index)


def read_yaml(path: Path) -> Any:
    """A config file as users save it: at most :data:`MAX_CONFIG_BYTES`, UTF-8 with or without a
    byte-order mark, YAML aliases only up to :data:`MAX_ALIASES`; anything else one line."""
    text = read_user_text(path, "config file", MAX_CONFIG_BYTES, "a config is a few kilobytes of YAML")
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except I2XError as exc:
        raise I2XError(f"config file {path} {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise I2XError(f"config file {path} is not valid YAML{where}: {getattr(exc, 'problem', None) or str(exc).splitlines()[0]}") from None


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check and convert ``value`` to ``annotation``; one-line error naming ``key``."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value in choices:
            return value
        raise I2XError(f"config key '{key}' must be one of {', '.join(map(str, choices))}, got {_short(value)}")
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
    raise I2XError(f"config key '{key}' expects {type_name}, got {_short(value)}")


def _check_field(key: str, value: Any, section: type, name: str, source: str) -> None:
    """The field's declared bounds (:func:`i2x.platform.settings.setting`): one line if not met."""
    problem = field_problem(key, value, bounds_of(section, name), source)
    if problem:
        raise I2XError(problem)


def check_rules(config: Config) -> Config:
    """The rules between fields (each section's ``CHECKS``): the first that does not hold is
    one line. Run on the whole config once every source is applied."""
    for name in SECTIONS:
        problems = rule_problems(name, getattr(config, name))
        if problems:
            raise I2XError(problems[0])
    return config


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
            _check_field(key, per_section[head][tail], sections[head], tail, source)
            if isinstance(value, str) and has_secret(value):
                raise I2XError(f"config key '{key}' in {source} holds a password ({redact(value)}); config values are copied into "
                               f"params, checkpoints and the explanation: give the URL in the environment instead "
                               f"(tune.storage: $I2X_OPTUNA_STORAGE)")
        elif head in top_hints and head not in sections and not tail:
            top[head] = _coerce(key, value, top_hints[head])
            _check_field(key, top[head], Config, head, source)
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
    tree = read_yaml(path)
    per_device = tree.pop(DEVICES_KEY, None) if isinstance(tree, dict) else None
    config = _apply(Config(), _flatten_yaml(tree, path), str(path))
    if per_device:
        if not isinstance(per_device, dict) or not set(per_device) <= {"cpu", "cuda"}:
            raise I2XError(f"config file {path}: '{DEVICES_KEY}' must map cpu and/or cuda to sections, got {_short(per_device)}")
        asked = apply_overrides(config, overrides) if overrides else config
        kind = device_kind(asked.train.device)
        config = _apply(config, _flatten_yaml(per_device.get(kind), path), f"{path} ({DEVICES_KEY}.{kind})")
    return check_rules(apply_overrides(config, overrides) if overrides else config)


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
    return check_rules(_apply(config, parsed, "overrides")) if parsed else config


def config_from_dict(tree: dict[str, Any]) -> Config:
    """Rebuild a :class:`Config` from :meth:`Config.to_dict` output (e.g. a checkpoint)."""
    flat = {k: v for k, v in _flatten_yaml(tree, Path("<checkpoint>")).items() if k not in RETIRED_KEYS}
    return check_rules(_apply(Config(), flat, "checkpoint config"))


def _attribute_docs(section: type) -> dict[str, str]:
    """``{field: its words}`` from a section's docstring (``Attributes:``, Google style; a line
    ``a / b: ...`` documents both)."""
    doc = section.__doc__ or ""
    out: dict[str, str] = {}
    current: list[str] = []
    in_attrs = False
    for line in doc.splitlines():
        if line.strip() == "Attributes:":
            in_attrs = True
            continue
        if not in_attrs:
            continue
        m = re.match(r"^ {8}([\w ,/]+?):\s*(.*)$", line)
        if m and not line.startswith(" " * 12):
            current = [n.strip() for n in re.split(r"[/,]", m.group(1)) if n.strip()]
            for name in current:
                out[name] = m.group(2).strip()
        elif line.startswith(" " * 12) and current:
            for name in current:
                out[name] += " " + line.strip()
    return out


def config_table() -> str:
    """docs/config.md: every config key with its type, default, what it accepts and its
    meaning, from the dataclasses (their fields, :func:`i2x.platform.settings.setting` bounds
    and docstrings) and each section's rules between fields."""
    from i2x.platform.settings import Bounds

    lines = ["# Configuration reference", "",
             "Generated from `i2x/platform/config.py` and `config_steps.py` (`make docs`; a test checks it is current). Every",
             "key is set in a config file (`configs/*.yaml`) or with `--overrides key=value` (`make run OVERRIDES=...`). A value",
             "outside what a key accepts, a number that is not finite, or a broken rule between keys is refused in one line",
             "before any run is opened.", ""]
    top = typing.get_type_hints(Config)
    sections = [("", Config)] + [(name, top[name]) for name in SECTIONS]
    for name, section in sections:
        hints, docs = typing.get_type_hints(section), _attribute_docs(section)
        lines += [f"## `{name or 'top level'}`", "", "| key | type | default | accepts | meaning |", "|---|---|---|---|---|"]
        for f in dataclasses.fields(section):
            if name == "" and f.name in SECTIONS:
                continue
            kind = hints[f.name]
            if typing.get_origin(kind) is Literal:
                accepts = " \\| ".join(map(str, typing.get_args(kind)))
                type_name = "choice"
            else:
                bounds: Bounds | None = f.metadata.get("bounds")
                accepts = bounds.words() if bounds else ("true / false" if kind is bool else "any")
                if bounds and bounds.nonempty:
                    accepts = f"a non-empty list{'' if accepts == 'any finite number' else ', each ' + accepts}"
                type_name = getattr(kind, "__name__", str(kind)).replace("typing.", "")
                if typing.get_origin(kind) is tuple:
                    type_name = "list"
            default = f.default if f.default is not dataclasses.MISSING else "(section)"
            meaning = docs.get(f.name, "").replace("|", "\\|")
            lines.append(f"| `{(name + '.') if name else ''}{f.name}` | {type_name} | `{_plain_default(default)}` | {accepts} | {meaning} |")
        checks = getattr(section, "CHECKS", ())
        if checks:
            lines += ["", "Rules between keys: " + "; ".join(c.say for c in checks) + "."]
        lines.append("")
    return "\n".join(lines)


def _plain_default(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return "''" if value == "" else str(value)
