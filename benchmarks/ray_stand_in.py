"""An import-only stand-in for ``ray``, for a GPU machine that has no ``ray`` and no network.

FuxiCTR 2.3.10 imports ``ray`` (and three names of ``ray.data``) at module level, for its own
parquet pipeline; this package never runs that pipeline, and ray's wheel (~80 MB) is larger
than what can be carried to such a machine. The stand-in lets those imports succeed; using
anything of it raises ``RuntimeError`` naming the stand-in, so nothing runs on it silently.
``benchmarks/gpu_preflight.py --ray-stand-in DIR`` writes it only when ``ray`` is absent.
"""
from __future__ import annotations

import os

MESSAGE = ("ray is an import-only stand-in on this machine (benchmarks/ray_stand_in.py): "
           "install ray to use FuxiCTR's ray pipeline")

#: Module path (under the folder) -> source.
MODULES = {
    "ray/__init__.py": f'''"""Import-only stand-in for ray (benchmarks/ray_stand_in.py)."""
IS_STAND_IN = True
__version__ = "stand-in"
MESSAGE = {MESSAGE!r}


def _refuse(*args, **kwargs):
    raise RuntimeError(MESSAGE)


init = is_initialized = remote = get = put = shutdown = _refuse


def __getattr__(name):
    if name == "data":
        import ray.data
        return ray.data
    raise AttributeError(f"{{name}}: " + MESSAGE)
''',
    "ray/data/__init__.py": '''"""Import-only stand-in for ray.data."""
from ray import MESSAGE, _refuse


class _Refused:
    """A class to import and subclass; making an instance raises."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError(MESSAGE)


class SaveMode(_Refused):
    pass


class TaskPoolStrategy(_Refused):
    pass


class DataContext(_Refused):
    get_current = staticmethod(_refuse)


read_parquet = from_arrow = from_pandas = _refuse
''',
    "ray/data/datasource/__init__.py": '"""Import-only stand-in for ray.data.datasource."""\n',
    "ray/data/datasource/filename_provider.py": '''"""Import-only stand-in."""
from ray.data import _Refused


class FilenameProvider(_Refused):
    pass
''',
}


def write(folder: str) -> str:
    """Write the stand-in package ``ray`` into ``folder``; returns the package's folder."""
    for relative, source in MODULES.items():
        path = os.path.join(folder, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(source)
    return os.path.join(folder, "ray")
