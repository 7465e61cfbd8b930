"""On-disk datasets (filled in below)."""

from __future__ import annotations

ON_DISK: dict = {}
