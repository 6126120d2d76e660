"""Feedback (phản ánh hiện trường): residents report, city staff answer within deadlines, Open311 for others."""

from __future__ import annotations

from feedback.module import module

__all__ = ["module"]
