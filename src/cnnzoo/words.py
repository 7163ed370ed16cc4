"""Counts in messages: "1 epoch", "2 epochs", "1,000 images" (never "1 epochs")."""

from __future__ import annotations

__all__ = ["plural"]


def plural(n: float, noun: str, plural_form: str | None = None) -> str:
    """`n` and `noun`, the noun in the plural unless n is exactly 1; whole numbers get thousands
    separators, others as short as they print (``plural(0.5, "epoch")`` is ``"0.5 epochs"``)."""
    number = f"{int(n):,}" if float(n).is_integer() else f"{n:g}"
    return f"{number} {noun if n == 1 else (plural_form or noun + 's')}"
