"""Read and check an experiment's configuration before anything is touched.

``load_params`` reads the FuxiCTR-format YAML (``model_config.yaml`` or ``model_config/*.yaml``,
``dataset_config.yaml`` or ``dataset_config/*.yaml``), merges ``Base`` and the expid as FuxiCTR
does, and :func:`check_params` checks the merged params against what the model's ``build``, the
shared base class, the trainer and the pipeline accept. Every mistake is one
:class:`~fuxictr_mmctr.errors.UserError` line naming the key (and, for YAML syntax, the file and
line), raised before a log is opened, a checkpoint folder made or data generated:

* an unknown key suggests the closest known one (``batch_sise`` -> did you mean ``batch_size``?);
* the model's ``build`` arguments follow rules read from its signature
  (:mod:`~fuxictr_mmctr.pipeline.build_arguments`: sizes and counts >= 1, Literal choices, ...),
  and explicit rules cover the trainer and pipeline keys (``batch_size >= 1``,
  ``epochs >= 1``, ``learning_rate > 0``, dropouts in ``[0, 1)``, known optimizer, loss, metric
  and monitor names, ``feature_specs`` naming existing features, a numeric ``seed``);
* numbers YAML reads as strings (``1e-3`` without a dot) are taken as the numbers they spell.
"""
from __future__ import annotations

import glob
import inspect
import numbers
import os

import yaml

from fuxictr_mmctr.errors import UserError, did_you_mean

#: Keys the pipeline itself reads.
PIPELINE_KEYS = ("model", "dataset_id", "model_id", "batch_size", "eval_batch_size", "epochs",
                 "shuffle", "gpu")
#: Dataset-config keys (FuxiCTR's plus this package's).
DATASET_KEYS = ("data_root", "train_data", "valid_data", "test_data", "item_info", "feature_cols",
                "label_col", "synthetic_preset", "synthetic_seed", "validation", "feature_specs",
                "loader", "item_table")
#: FuxiCTR bookkeeping keys that every FuxiCTR config carries; they change nothing here
#: (loading is in-process and the feature map is always rebuilt from the config), so they are
#: accepted with the values that mean "nothing special" and refused otherwise.
FUXICTR_NO_OP_KEYS = {"num_workers": None, "pickle_feature_encoder": None, "debug_mode": False,
                      "rebuild_dataset": None, "data_format": "parquet", "use_features": None,
                      "feature_config": None}
FEATURE_TYPES = ("meta", "categorical", "sequence", "numeric", "embedding", "frozen_embedding")


# ---------------------------------------------------------------------- reading YAML
def read_yaml(path: str) -> dict:
    """A YAML file that must hold a mapping; syntax errors name the file and line."""
    try:
        with open(path, encoding="utf-8") as handle:
            content = yaml.safe_load(handle)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark is not None else path
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UserError(f"{where}: not valid YAML ({problem})") from None
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror})") from None
    return _mapping(content, path, "expected a mapping of names to settings")


def _mapping(value, where: str, expected: str) -> dict:
    """``value`` when it is a mapping (``None`` reads as empty), else one line saying so."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where}: {expected}, found a {type(value).__name__}")
    return value


def _config_files(config_dir: str, name: str) -> list[str]:
    single = os.path.join(config_dir, f"{name}.yaml")
    if os.path.isfile(single):
        return [single]
    return sorted(glob.glob(os.path.join(config_dir, name, "*.yaml")))


def _block(path: str, content: dict, name: str) -> dict:
    return _mapping(content[name], path, f"{name} must be a mapping of keys to values")


def load_params(config_dir: str, expid: str, gpu: int = -1) -> dict:
    """Merged dataset + model parameters of ``expid`` (``Base``, then the expid's own keys, then
    its dataset's), read as FuxiCTR reads them, with one-line errors."""
    if not os.path.isdir(config_dir):
        raise UserError(f"config folder {config_dir} not found")
    model_files = _config_files(config_dir, "model_config")
    if not model_files:
        raise UserError(f"{config_dir}: no model_config.yaml or model_config/*.yaml")
    base, own, own_file = {}, None, None
    for path in model_files:
        content = read_yaml(path)
        if "Base" in content:
            base = _block(path, content, "Base")
        if expid in content:
            own, own_file = _block(path, content, expid), path
    if own is None:
        raise UserError(f"expid {expid} not found in the model configs of {config_dir} "
                        f"(model_config.yaml or model_config/*.yaml)")
    params = {**base, **own, "model_id": expid}
    if not params.get("dataset_id"):
        raise UserError(f"{own_file}: expid {expid} has no dataset_id")
    dataset_id = params["dataset_id"]
    for path in _config_files(config_dir, "dataset_config"):
        content = read_yaml(path)
        if dataset_id in content:
            params.update(_block(path, content, dataset_id))
            params["dataset_id"] = dataset_id
            params["gpu"] = gpu
            return params
    raise UserError(f"dataset_id {dataset_id} of expid {expid} not found in "
                    f"{config_dir}/dataset_config.yaml")


def dataset_params(config_dir: str, dataset_id: str) -> dict:
    """The dataset config block of ``dataset_id`` (one-line error when there is none)."""
    for path in _config_files(config_dir, "dataset_config"):
        content = read_yaml(path)
        if dataset_id in content:
            return _block(path, content, dataset_id)
    raise UserError(f"dataset_id {dataset_id} not found in {config_dir}/dataset_config.yaml")


def expids_in(config_dir: str) -> list[str]:
    """Every expid of the model configs in ``config_dir`` (``Base`` excluded), in file order."""
    if not os.path.isdir(config_dir):
        raise UserError(f"config folder {config_dir} not found")
    expids = []
    for path in _config_files(config_dir, "model_config"):
        expids += [name for name in read_yaml(path) if name != "Base"]
    return list(dict.fromkeys(expids))


# ---------------------------------------------------------------------- checking
def known_keys(model_class) -> set[str]:
    """Every key a config of ``model_class`` may hold."""
    from fuxictr_mmctr.models.base import MultimodalRankModel
    from fuxictr_mmctr.training.trainer_config import TrainerConfig

    base = [name for name in inspect.signature(MultimodalRankModel.__init__).parameters
            if name not in ("self", "feature_map", "params", "item_table")]
    return (set(base) | set(model_class.build_parameters()) | set(TrainerConfig.keys())
            | set(PIPELINE_KEYS) | set(DATASET_KEYS) | set(FUXICTR_NO_OP_KEYS))


def check_params(params: dict, where: str = "") -> dict:
    """Check the merged params of an expid; returns them with numeric strings made numbers.

    ``where`` names the expid in messages (``expid X: ...``).
    """
    from fuxictr_mmctr.models.registry import get_model_class

    prefix = f"{where}: " if where else ""
    if "model" not in params:
        raise UserError(f"{prefix}no model named (add `model: Transformer_DCN`, say)")
    model_class = get_model_class(params["model"])
    allowed = known_keys(model_class)
    for key in params:
        if key not in allowed:
            raise UserError(f"{prefix}unknown key {key!r}{did_you_mean(key, allowed)}")
    checked = dict(params)
    _check_no_op_keys(checked, prefix)
    _check_pipeline_and_trainer(checked, prefix)
    _check_build_arguments(checked, model_class, prefix)
    _check_dataset(checked, prefix)
    return checked


def _fail(prefix, key, expected, value):
    raise UserError(f"{prefix}{key} must be {expected}, got {value!r}")


def _number(checked, prefix, key, expected, low=None, high=None, low_open=False,
            high_open=False, nullable=False):
    value = checked.get(key)
    if value is None and (nullable or key not in checked):
        return
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            _fail(prefix, key, expected, checked[key])
        checked[key] = value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        _fail(prefix, key, expected, value)
    if low is not None and (value < low or (low_open and value == low)):
        _fail(prefix, key, expected, value)
    if high is not None and (value > high or (high_open and value == high)):
        _fail(prefix, key, expected, value)


def _integer(checked, prefix, key, low, nullable=False):
    value = checked.get(key)
    if value is None and (nullable or key not in checked):
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        expected = f"an integer >= {low}" + (" or null" if nullable else "")
        _fail(prefix, key, expected, value)


def _boolean(checked, prefix, key):
    if key in checked and not isinstance(checked[key], bool):
        _fail(prefix, key, "True or False", checked[key])


def _check_no_op_keys(checked, prefix):
    for key, neutral in FUXICTR_NO_OP_KEYS.items():
        if key in checked and neutral is not None and checked[key] not in (neutral, None):
            raise UserError(f"{prefix}{key}: {checked[key]!r} is not supported (this package "
                            f"reads {neutral!r} only)")
    for key in ("use_features", "feature_config"):
        if checked.get(key) is not None:
            raise UserError(f"{prefix}{key} is not supported: list the features in the dataset "
                            f"config's feature_cols (and per-feature settings in feature_specs)")


def _check_pipeline_and_trainer(checked, prefix):
    from fuxictr_mmctr.training.metrics import METRICS
    from fuxictr_mmctr.training.trainer_config import BCE_LOSSES, optimizer_class

    _integer(checked, prefix, "batch_size", 1)
    if "batch_size" not in checked:
        raise UserError(f"{prefix}batch_size is required")
    _integer(checked, prefix, "eval_batch_size", 1, nullable=True)
    _integer(checked, prefix, "epochs", 1)
    if "epochs" not in checked:
        raise UserError(f"{prefix}epochs is required")
    _number(checked, prefix, "learning_rate", "a number > 0", low=0, low_open=True)
    _number(checked, prefix, "lr_decay_factor", "a number in (0, 1]", low=0, high=1,
            low_open=True)
    _number(checked, prefix, "max_gradient_norm", "a number >= 0 or null", low=0, nullable=True)
    _integer(checked, prefix, "early_stop_patience", 1)
    _integer(checked, prefix, "eval_steps", 1, nullable=True)
    _integer(checked, prefix, "accumulation_steps", 1)
    _integer(checked, prefix, "embedding_dim", 1)
    _integer(checked, prefix, "max_len", 1, nullable=True)
    _integer(checked, prefix, "verbose", 0)
    for key in ("shuffle", "save_best_only", "reduce_lr_on_plateau", "save_resume_state",
                "use_multimodal", "packed_history", "compile", "tf32", "fused_optimizer"):
        _boolean(checked, prefix, key)
    from fuxictr_mmctr.training.speed import PRECISIONS

    if checked.get("precision", "fp32") not in PRECISIONS:
        _fail(prefix, "precision", f"one of {', '.join(PRECISIONS)}", checked["precision"])
    seed = checked.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        _fail(prefix, "seed", "an integer", seed)
    for key in ("embedding_regularizer", "net_regularizer"):
        _check_regularizer(checked, prefix, key)
    if "optimizer" in checked:
        try:
            optimizer_class(checked["optimizer"])
        except UserError as error:
            raise UserError(f"{prefix}{error}") from None
    if "loss" in checked and checked["loss"] not in BCE_LOSSES:
        _fail(prefix, "loss", f"one of {', '.join(BCE_LOSSES)}", checked["loss"])
    metrics = checked.get("metrics", ["logloss", "AUC"])
    if not isinstance(metrics, list) or not metrics or any(m not in METRICS + (
            "binary_crossentropy",) for m in metrics):
        _fail(prefix, "metrics", f"a list of {', '.join(METRICS)}", metrics)
    _check_monitor(checked, prefix, METRICS)
    if checked.get("monitor_mode", "max") not in ("max", "min"):
        _fail(prefix, "monitor_mode", "max or min", checked["monitor_mode"])
    if checked.get("task", "binary_classification") != "binary_classification":
        _fail(prefix, "task", "binary_classification", checked["task"])


def _check_regularizer(checked, prefix, key):
    value = checked.get(key)
    if value is None:
        return
    if isinstance(value, str):
        text = value.strip().lower()
        if text.startswith(("l1(", "l2(", "l1_l2(")) and text.endswith(")"):
            return
        try:
            value = float(text)
        except ValueError:
            _fail(prefix, key, "a number >= 0 or l1(x) / l2(x) / l1_l2(x, y)", checked[key])
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
        _fail(prefix, key, "a number >= 0 or l1(x) / l2(x) / l1_l2(x, y)", checked[key])
    checked[key] = float(value)  # FuxiCTR ignores an int regulariser (e.g. 1) silently


def _check_monitor(checked, prefix, metrics):
    monitor = checked.get("monitor", "AUC")
    names = list(monitor) if isinstance(monitor, dict) else [monitor]
    if isinstance(monitor, dict) and not all(
            isinstance(w, numbers.Real) and not isinstance(w, bool) for w in monitor.values()):
        _fail(prefix, "monitor", "a metric name or {metric: weight}", monitor)
    unknown = [name for name in names if name not in metrics]
    if unknown:
        _fail(prefix, "monitor", f"built from {', '.join(metrics)}", monitor)


def _check_build_arguments(checked, model_class, prefix):
    """Every argument of the model's ``build`` by the rules of :mod:`.build_arguments` (read
    from its signature, so every registered model is covered). A number YAML read as a
    string (``1e-1``) is taken as that number where the number is valid."""
    from fuxictr_mmctr.pipeline.build_arguments import argument_problem

    for name in model_class.build_parameters():
        if name not in checked:
            continue
        problem = argument_problem(model_class, name, checked[name])
        if problem is not None and isinstance(checked[name], str):
            try:
                number = float(checked[name])
            except ValueError:
                number = None
            if number is not None and argument_problem(model_class, name, number) is None:
                checked[name], problem = number, None
        if problem is not None:
            raise UserError(f"{prefix}{problem}")


def _check_feature_spec(spec: dict, prefix: str) -> None:
    """The settings of one ``feature_specs`` entry that need no data: a known ``projection``
    and a positive ``embedding_dim`` (the feature map checks them against the vectors)."""
    from fuxictr_mmctr.data.feature_map import PROJECTIONS

    projection = spec.get("projection")
    if projection is not None and str(projection).lower() not in PROJECTIONS:
        _fail(prefix, "projection", f"one of {', '.join(PROJECTIONS)}", projection)
    _integer(spec, prefix, "embedding_dim", 1)


def _check_dataset(checked, prefix):
    from fuxictr_mmctr.data.loader import loader_options, validation_mode

    for key in ("train_data", "valid_data", "item_info"):
        if not isinstance(checked.get(key), str):
            _fail(prefix, key, "a path (string) in the dataset config", checked.get(key))
    if checked.get("test_data") is not None and not isinstance(checked["test_data"], str):
        _fail(prefix, "test_data", "a path or null", checked["test_data"])
    columns = checked.get("feature_cols")
    if not isinstance(columns, list) or not columns:
        _fail(prefix, "feature_cols", "a list of feature mappings", columns)
    names = set()
    for index, column in enumerate(columns):
        if not isinstance(column, dict) or "name" not in column:
            raise UserError(f"{prefix}feature_cols[{index}] must be a mapping with a name, got "
                            f"{column!r}")
        if column.get("type") not in FEATURE_TYPES:
            raise UserError(f"{prefix}feature_cols[{index}] ({column['name']}): type must be one "
                            f"of {', '.join(FEATURE_TYPES)}, got {column.get('type')!r}")
        names.update(column["name"] if isinstance(column["name"], list) else [column["name"]])
    label = checked.get("label_col")
    if not isinstance(label, dict) or "name" not in label:
        _fail(prefix, "label_col", "a mapping with a name", label)
    specs = checked.get("feature_specs")
    if specs is not None:
        if not isinstance(specs, list):
            _fail(prefix, "feature_specs", "a list of mappings with a name", specs)
        for spec in specs:
            if not isinstance(spec, dict) or spec.get("name") not in names:
                known = ", ".join(sorted(names))
                raise UserError(f"{prefix}feature_specs: {spec!r} does not name a feature of "
                                f"the dataset ({known})")
            _check_feature_spec(spec, f"{prefix}feature_specs, feature {spec['name']}: ")
    validation_mode(checked)
    loader_options(checked)
    from fuxictr_mmctr.pipeline.datasets import item_table_spec

    item_table_spec(checked)  # the enriched item table's block (docs/raw_data.md)
    preset = checked.get("synthetic_preset")
    if preset is not None:
        from fuxictr_mmctr.data.synthetic import PRESETS

        if preset not in PRESETS:
            _fail(prefix, "synthetic_preset", f"one of {', '.join(sorted(PRESETS))}", preset)
    _integer(checked, prefix, "synthetic_seed", 0)
