"""Settings of the service, read from environment variables (listed in README.md)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

DEFAULT_TICK_SECONDS = {{cookiecutter.tick_seconds | ws_float}}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


@dataclass(frozen=True)
class Settings:
    """What the service reads from its environment."""

    log_level: str = "INFO"
    """``LOG_LEVEL``: the level of the service's own log messages."""

    tick_seconds: float = DEFAULT_TICK_SECONDS
    """``TICK_SECONDS``: the period of ticker endpoints."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Read the settings; an unset or empty variable keeps its default."""
        defaults = cls()
        log_level = environ.get("LOG_LEVEL", "").strip().upper() or defaults.log_level
        if log_level not in LOG_LEVELS:
            raise SettingsError(f"LOG_LEVEL={log_level!r} must be one of {', '.join(LOG_LEVELS)}")
        tick_seconds = _seconds(
            "TICK_SECONDS", environ.get("TICK_SECONDS", ""), defaults.tick_seconds
        )
        return cls(log_level=log_level, tick_seconds=tick_seconds)


def _seconds(name: str, value: str, default: float) -> float:
    value = value.strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise SettingsError(f"{name}={value!r} must be a positive number of seconds")
    return seconds


@lru_cache
def get_settings() -> Settings:
    """The settings of this process, read once (``get_settings.cache_clear()`` re-reads them)."""
    return Settings.from_env()
