"""Parking: lots and on-street zones, tariffs, gate and on-street sessions paid through payments, debts,
permits, enforcement, live availability and reconciliation down to the remittance."""

from __future__ import annotations

from parking.module import module

__all__ = ["module"]
