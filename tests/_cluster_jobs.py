"""Functions the workers of tests/test_cluster.py run by name (``--module tests._cluster_jobs``)."""

from __future__ import annotations

import os


def where() -> int:
    """The worker process's pid."""
    return os.getpid()


def shout(word: str) -> str:
    print(f"shouting {word}")
    return word.upper()
