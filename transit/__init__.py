"""Transit: fares as data, rider categories from verified data, wallet tickets, the two-level dynamic QR,
online gates, offline validators and reconciliation of their taps.

`transit.credential` is the app-side encoder and the verifier (no backend imports); `transit.validator` is
the reference validator.
"""

from __future__ import annotations

from transit.module import module

__all__ = ["module"]
