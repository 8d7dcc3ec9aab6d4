"""Hub settings, read from the environment with the ``GROCERYSYNC_`` prefix."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the hub process is configured with."""

    model_config = SettingsConfigDict(env_prefix="GROCERYSYNC_", extra="ignore")

    data_dir: Path = Field(default=Path("grocerysync-data"), description="Where the hub keeps its files.")
    bind: str = Field(default="127.0.0.1:8080", description="HOST:PORT to serve on.")
