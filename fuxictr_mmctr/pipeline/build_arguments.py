"""What a model's ``build`` accepts, read from its signature: one rule set for every model.

A registered model needs no checking code of its own: each argument of its ``build`` is judged
by its default, its name and its annotation, and the first value that breaks a rule is one line
naming the key (:func:`argument_problem` returns it, the config check raises it):

* ``typing.Literal[...]`` annotation: one of those choices;
* ``bool`` default: ``True`` or ``False``;
* a name with ``dropout`` or ``prob`` in it: a probability in ``[0, 1)``;
* ``int`` default: a size or count, an integer ``>= 1``;
* ``None`` default and a size word in the name (``interest_dim``, ``dcn_low_rank``,
  ``num_row``, ...): an integer ``>= 1`` or null;
* ``float`` default: a number;
* list default of integers, or a name ending in ``units``: a list of positive integers;
* a name ending in ``activation`` / ``activations``: a torch activation name (or a list of them);
* other ``str`` default: a string.

Example::

    argument_problem(DIEN, "interest_dim", -4)
    # 'interest_dim must be an integer >= 1 or null, got -4'
"""
from __future__ import annotations

import inspect
import numbers
import typing

#: Words of an argument name that make it a size or a count (split at ``_``).
SIZE_WORDS = frozenset({"dim", "dims", "rank", "num", "layers", "heads", "cols", "row", "rows",
                        "experts", "size", "len", "units"})
#: Activation names FuxiCTR's ``get_activation`` knows besides ``torch.nn`` class names.
FUXICTR_ACTIVATIONS = frozenset({"relu", "sigmoid", "tanh", "softmax", "prelu", "dice"})


def argument_problem(model_class, name: str, value) -> str | None:
    """Why ``value`` is not a valid ``name`` for ``model_class.build``; ``None`` when it is
    (and for names ``build`` does not take)."""
    parameter = inspect.signature(model_class.build).parameters.get(name)
    if parameter is None:
        return None
    choices = _literal_choices(model_class, name)
    default = parameter.default
    words = set(name.lower().split("_"))
    if choices is not None:
        ok, expected = value in choices, f"one of {', '.join(map(str, choices))}"
    elif isinstance(default, bool):
        ok, expected = isinstance(value, bool), "True or False"
    elif "dropout" in name or "prob" in words:
        ok, expected = _is_number(value) and 0 <= value < 1, "a number in [0, 1)"
    elif isinstance(default, numbers.Integral):
        ok, expected = _is_count(value), "an integer >= 1"
    elif default is None and words & SIZE_WORDS:
        ok, expected = value is None or _is_count(value), "an integer >= 1 or null"
    elif isinstance(default, numbers.Real):
        ok, expected = _is_number(value), "a number"
    elif isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            return f"{name} must be a list, got {value!r}"
        wants_counts = name.endswith("units") or any(_is_count(item) for item in default)
        ok, expected = (not wants_counts or all(_is_count(item) for item in value),
                        "a list of positive integers")
    elif name.endswith(("activation", "activations")):
        names = value if isinstance(value, list) else [value]
        ok = bool(names) and all(_is_activation(item) for item in names)
        expected = "a torch activation name (ReLU, Tanh, ...; or a list of them)"
    elif isinstance(default, str):
        ok, expected = isinstance(value, str), "a string"
    else:
        return None
    return None if ok else f"{name} must be {expected}, got {value!r}"


def _literal_choices(model_class, name: str):
    """The choices of a ``Literal[...]`` annotation of ``build``'s ``name``, else ``None``."""
    try:
        hints = typing.get_type_hints(model_class.build)
    except (NameError, TypeError):  # an annotation that does not resolve: no choices
        return None
    hint = hints.get(name)
    if typing.get_origin(hint) is typing.Literal:
        return typing.get_args(hint)
    return None


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_count(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def _is_activation(name) -> bool:
    import torch.nn

    if not isinstance(name, str):
        return False
    if name.lower() in FUXICTR_ACTIVATIONS:
        return True
    candidate = getattr(torch.nn, name, None)
    return inspect.isclass(candidate) and issubclass(candidate, torch.nn.Module)
