"""Runtime settings, one typed object with a documented precedence.

Precedence, highest first: command-line options > environment variables >
the site's YAML file > built-in defaults. This module owns the environment
part; site files are read by :mod:`sitekb.sites` and the CLI passes its options
as overrides.

Environment variables read:

``SITEKB_DATABASE_URL``     external Postgres (with pgvector); unset: the embedded one
``SITEKB_HOME``             project-local state folder (default ``./.sitekb``)
``SITEKB_EMBEDDING_PROVIDER`` ``local`` or ``openai`` (overrides the site file)
``SITEKB_EMBEDDING_MODEL``  model name (overrides the site file)
``SITEKB_EMBEDDING_DIMENSIONS`` output dimensions for models that support it
``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` the OpenAI (or compatible) endpoint;
                            the base URL wins over the site file's
                            ``embedding.base_url``, a key in the variable named by
                            ``embedding.api_key_env`` wins over ``OPENAI_API_KEY``,
                            and under Airflow both may come from the connection
                            ``sitekb_openai`` (see sitekb.orchestration.tasks)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sitekb.errors import ConfigError


def _default_home() -> Path:
    return Path(os.environ.get("SITEKB_HOME") or Path.cwd() / ".sitekb").resolve()


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    home: Path = field(default_factory=_default_home)
    embedding_provider: str | None = None
    embedding_model: str | None = None
    embedding_dimensions: int | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None

    @classmethod
    def from_env(cls, **cli: object) -> "Settings":
        """Settings from the environment, with non-None CLI values on top."""
        env = os.environ
        dims = env.get("SITEKB_EMBEDDING_DIMENSIONS")
        try:
            dimensions = int(dims) if dims else None
        except ValueError:
            raise ConfigError(f"SITEKB_EMBEDDING_DIMENSIONS={dims!r} is not a whole number") from None
        provider = env.get("SITEKB_EMBEDDING_PROVIDER") or None
        if provider not in (None, "local", "openai"):
            raise ConfigError(f"SITEKB_EMBEDDING_PROVIDER={provider!r}: use 'local' or 'openai'")
        values = dict(
            database_url=env.get("SITEKB_DATABASE_URL") or None,
            home=_default_home(),
            embedding_provider=provider,
            embedding_model=env.get("SITEKB_EMBEDDING_MODEL") or None,
            embedding_dimensions=dimensions,
            openai_api_key=env.get("OPENAI_API_KEY") or None,
            openai_base_url=env.get("OPENAI_BASE_URL") or None,
        )
        values.update({k: v for k, v in cli.items() if v is not None})
        return cls(**values)

    def site_overrides(self) -> dict:
        """The parts of these settings that override a site file."""
        embedding = {
            k: v
            for k, v in {
                "provider": self.embedding_provider,
                "model": self.embedding_model,
                "dimensions": self.embedding_dimensions,
            }.items()
            if v is not None
        }
        return {"embedding": embedding} if embedding else {}
