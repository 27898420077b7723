"""The ``search:`` block of a tuner yaml and the value ranges of its ``tuner_space``, checked.

A tuner file without ``search:`` (or with ``search: {type: grid}``) is a FuxiCTR grid
(:mod:`.tuner`). ``search: {type: optuna, ...}`` makes it a sampled search (:mod:`.optuna_search`)
whose ``tuner_space`` values mean:

* a list of two or more values: one of them (categorical);
* ``{low: 1.0e-4, high: 1.0e-2, log: true}``: a float range (``log`` and ``step`` optional);
* ``{low: 1, high: 4, type: int}``: an int range (``step`` optional, ``log`` allowed);
* anything else (a scalar, a one-value list, a mapping without ``low``/``high``): a fixed value.

Nothing here imports optuna: the block is checked the same with or without it. Every mistake is
one :class:`UserError` naming the file and the key (``search.trials``,
``tuner_space.learning_rate.low``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import yaml

from fuxictr_mmctr.errors import UserError, did_you_mean

SEARCH_TYPES = ("grid", "optuna")
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")
DIRECTIONS = ("maximize", "minimize")
#: Keys of an optuna ``search:`` block (a grid takes ``type`` only).
SEARCH_KEYS = ("type", "sampler", "trials", "pruner", "prune_after_epochs", "start_from_base",
               "metric", "direction", "storage", "study", "timeout_minutes")
#: Keys of a range in ``tuner_space``.
RANGE_KEYS = ("low", "high", "type", "log", "step")
RANGE_TYPES = ("float", "int")
#: What the optional extra installs, for the error without optuna.
INSTALL_HINT = 'pip install -e ".[tune]"'


@dataclass(frozen=True)
class SearchSettings:
    """A checked optuna ``search:`` block; ``None`` fields take their defaults later (they
    depend on the base expid or the tuner file)."""

    trials: int
    sampler: str = "tpe"
    pruner: str = "median"
    prune_after_epochs: float = 0.0
    #: The first trial trains the base expid's own values of the sampled keys.
    start_from_base: bool = False
    metric: str | None = None
    direction: str | None = None
    storage: str | None = None
    study: str | None = None
    timeout_minutes: float | None = None


@dataclass(frozen=True)
class Choice:
    """One of ``values``; optuna sees each as ``labels[i]`` (values that are not None, bool,
    int, float or str, e.g. a list of layer sizes, are shown to it as their YAML text)."""

    values: tuple

    @property
    def labels(self) -> tuple:
        return tuple(_label(value) for value in self.values)

    def value_of(self, label):
        return self.values[self.labels.index(label)]

    def label_of(self, value):
        """The label of ``value``; ``None`` when it is not one of the choices."""
        for choice, label in zip(self.values, self.labels):
            if choice == value and isinstance(choice, bool) == isinstance(value, bool):
                return label  # (True == 1 in Python: a bool matches only a bool)
        return None

    def size(self) -> int | None:
        return len(self.values)


@dataclass(frozen=True)
class Range:
    """A float or int range ``[low, high]``, on a log scale or in steps of ``step``."""

    low: float
    high: float
    kind: str = "float"
    log: bool = False
    step: float | None = None

    def value_of(self, label):
        return label

    def label_of(self, value):
        """``value`` itself when the range holds it (inside, whole for an int range, on the
        steps when it has some); ``None`` when it does not."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if not self.low <= value <= self.high:
            return None
        if self.kind == "int" and value != int(value):
            return None
        if self.step:
            steps = (value - self.low) / self.step
            if abs(steps - round(steps)) > 1e-9:
                return None
        return int(value) if self.kind == "int" else float(value)

    def size(self) -> int | None:
        """How many values an int range holds; ``None`` for a float range."""
        if self.kind != "int":
            return None
        return int((self.high - self.low) // (self.step or 1)) + 1


def _label(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip()


def search_type(config_file: str, config: dict) -> str:
    """``"grid"`` or ``"optuna"``: what the tuner file's ``search:`` block asks for."""
    block = config.get("search")
    if block is None:
        return "grid"
    if not isinstance(block, dict):
        raise UserError(f"{config_file}: search must be a mapping such as {{type: optuna, "
                        f"trials: 20}}, got {block!r}")
    kind = block.get("type", "grid")
    if kind not in SEARCH_TYPES:
        raise UserError(f"{config_file}: search.type must be grid or optuna, got {kind!r}"
                        f"{did_you_mean(kind, SEARCH_TYPES)}")
    unknown = [key for key in block if key not in SEARCH_KEYS]
    if unknown:
        raise UserError(f"{config_file}: search.{unknown[0]} is not a search key"
                        f"{did_you_mean(unknown[0], SEARCH_KEYS)}; known keys: "
                        f"{', '.join(SEARCH_KEYS)}")
    if kind == "grid":
        extra = [key for key in block if key != "type"]
        if extra:
            raise UserError(f"{config_file}: search.{extra[0]} is for type: optuna; a grid "
                            f"runs every point of tuner_space")
    return kind


def check_grid_space(config_file: str, space: dict) -> None:
    """A grid has no ranges: a ``{low, high}`` value there is a mistake, not a fixed value."""
    for key, value in (space or {}).items():
        if _is_range(value):
            raise UserError(f"{config_file}: tuner_space.{key} is a range; ranges need "
                            f"search: {{type: optuna}} (a grid takes a list of values)")


def parse_search(config_file: str, config: dict) -> SearchSettings:
    """The checked ``search:`` block of an optuna tuner file."""
    block = config["search"]

    def where(key):
        return f"{config_file}: search.{key}"

    if "trials" not in block:
        raise UserError(f"{where('trials')} is missing; give the number of trials to finish, "
                        f"e.g. trials: 20")
    trials = block["trials"]
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise UserError(f"{where('trials')} must be a positive whole number, got {trials!r}")
    settings = {"trials": trials}
    for key, allowed in (("sampler", SAMPLERS), ("pruner", PRUNERS),
                         ("direction", DIRECTIONS)):
        if key in block:
            value = block[key]
            if value not in allowed:
                raise UserError(f"{where(key)} must be {' or '.join(allowed)}, got {value!r}"
                                f"{did_you_mean(value, allowed)}")
            settings[key] = value
    for key in ("metric", "storage", "study"):
        if key in block:
            value = block[key]
            if not isinstance(value, str) or not value.strip():
                raise UserError(f"{where(key)} must be a non-empty string, got {value!r}")
            settings[key] = value.strip()
    if "timeout_minutes" in block:
        value = block["timeout_minutes"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise UserError(f"{where('timeout_minutes')} must be a positive number, got "
                            f"{value!r}")
        settings["timeout_minutes"] = float(value)
    if "prune_after_epochs" in block:
        value = block["prune_after_epochs"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise UserError(f"{where('prune_after_epochs')} must be a number of epochs >= 0, "
                            f"got {value!r}")
        if settings.get("pruner", "median") == "none":
            raise UserError(f"{where('prune_after_epochs')} is set but search.pruner is none, "
                            f"which prunes nothing; drop one of them")
        settings["prune_after_epochs"] = float(value)
    if "start_from_base" in block:
        value = block["start_from_base"]
        if not isinstance(value, bool):
            raise UserError(f"{where('start_from_base')} must be true or false, got {value!r}")
        settings["start_from_base"] = value
    return SearchSettings(**settings)


def split_space(config_file: str, space: dict) -> tuple[dict, dict]:
    """``(fixed, sampled)``: ``{key: value}`` of the fixed keys and ``{key: Choice | Range}``
    of the sampled ones."""
    fixed, sampled = {}, {}
    for key, value in (space or {}).items():
        where = f"{config_file}: tuner_space.{key}"
        if _is_range(value):
            sampled[key] = _parse_range(where, value)
        elif isinstance(value, list) and len(value) > 1:
            sampled[key] = _parse_choice(where, value)
        elif isinstance(value, list):
            if not value:
                raise UserError(f"{where} is an empty list; give at least one value")
            fixed[key] = value[0]
        else:
            fixed[key] = value
    if not sampled:
        raise UserError(f"{config_file}: tuner_space has nothing to search: give a key a list "
                        f"of values or a range {{low: ..., high: ...}}")
    return fixed, sampled


def space_size(sampled: dict) -> int | None:
    """How many parameter sets the space holds; ``None`` when a float range makes it endless."""
    size = 1
    for param in sampled.values():
        count = param.size()
        if count is None:
            return None
        size *= count
    return size


def _is_range(value) -> bool:
    return isinstance(value, dict) and ("low" in value or "high" in value)


def _parse_choice(where: str, values: list) -> Choice:
    choice = Choice(tuple(values))
    labels = choice.labels
    for index, label in enumerate(labels):
        if label in labels[:index]:
            raise UserError(f"{where} lists {values[index]!r} twice; give each value once")
    return choice


def _parse_range(where: str, spec: dict) -> Range:
    unknown = [key for key in spec if key not in RANGE_KEYS]
    if unknown:
        raise UserError(f"{where}.{unknown[0]} is not a range key"
                        f"{did_you_mean(unknown[0], RANGE_KEYS)}; a range takes "
                        f"{', '.join(RANGE_KEYS)}")
    kind = spec.get("type", "float")
    if kind not in RANGE_TYPES:
        raise UserError(f"{where}.type must be float or int, got {kind!r}")
    bounds = {}
    for key in ("low", "high"):
        if key not in spec:
            raise UserError(f"{where}.{key} is missing; a range needs low and high")
        bounds[key] = _bound(f"{where}.{key}", spec[key], kind)
    low, high = bounds["low"], bounds["high"]
    if not low < high:
        raise UserError(f"{where}.high must be above low ({low!r}), got {high!r}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise UserError(f"{where}.log must be true or false, got {log!r}")
    if log and low <= 0:
        raise UserError(f"{where}.low must be above 0 on a log scale (log: true), got {low!r}")
    step = spec.get("step")
    if step is not None:
        step = _bound(f"{where}.step", step, kind)
        if log:
            raise UserError(f"{where}.step does not go with log: true; give one of them")
        if not step > 0:
            raise UserError(f"{where}.step must be above 0, got {step!r}")
    return Range(low, high, kind, log, step)


def _bound(where: str, value, kind: str):
    """A range bound as a number of ``kind``; YAML's ``1e-4`` (text, not a number) explained."""
    if isinstance(value, str):
        hint = ""
        try:
            float(value)
            hint = f" (YAML reads {value} as text; write it with a dot, e.g. 1.0e-4)"
        except ValueError:
            pass
        raise UserError(f"{where} must be a number, got {value!r}{hint}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{where} must be a number, got {value!r}")
    if kind == "int":
        if not isinstance(value, int):
            raise UserError(f"{where} must be a whole number for type: int, got {value!r}")
        return value
    return float(value)
