"""How counts are said in messages and status lines."""

from __future__ import annotations

__all__ = ["plural"]


def plural(count: int, noun: str) -> str:
    """``1 page``, ``2 pages``, ``1,000 rows``."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")
