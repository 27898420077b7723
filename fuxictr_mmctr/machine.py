"""What machine a figure was measured on (benchmarks and comparison records name it)."""
from __future__ import annotations

import platform


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo``, else ``platform.processor()``, else
    ``"unknown"``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
