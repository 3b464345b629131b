"""Runtime settings: one typed object, resolved once per entry point and passed down.

Precedence, highest first: command-line options > environment variables >
the site's YAML file > built-in defaults. This module is the environment
layer (pydantic-settings); site files are read by :mod:`sitekb.sites`, the CLI
passes its options to :meth:`Settings.from_env`, and the Airflow corner adds
its connections (:mod:`sitekb.orchestration.settings`). Nothing else in the
library reads ``os.environ``: an entry point builds a :class:`Settings` and
every function that needs a setting takes it as an argument.

Environment variables read:

``SITEKB_DATABASE_URL``      external Postgres (with pgvector); unset: the embedded one
``SITEKB_API_DATABASE_URL``  the database URL of ``sitekb serve`` (e.g. the sitekb_reader role)
``SITEKB_API_KEYS``          API keys of ``sitekb serve``, comma-separated
``SITEKB_ALLOWED_HOSTS``     Host names ``sitekb serve`` answers, comma-separated (``*``: any);
                             unset: the bound address and localhost/127.0.0.1/[::1]
``SITEKB_HOME``              project-local state folder (default ``./.sitekb``)
``SITEKB_SITES_DIR``         where named site configs live (default the repository's ``dags/sites``)
``SITEKB_DAGS_FOLDER``       the DAGs Airflow loads (default the repository's ``dags``)
``SITEKB_EMBEDDING_PROVIDER`` ``local`` or ``openai`` (overrides the site file)
``SITEKB_EMBEDDING_MODEL``   model name (overrides the site file)
``SITEKB_EMBEDDING_DIMENSIONS`` output dimensions for models that support it
``SITEKB_LOCAL_RUNTIME``     runtime of the bundled local model: ``auto`` (default: questions on
                             ONNX Runtime when installed and the conversion works, else torch;
                             bulk embedding on torch), ``onnx``, ``torch``
``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` the OpenAI (or compatible) endpoint; the
                             base URL wins over the site file's ``embedding.base_url``;
                             a key in the variable named by ``embedding.api_key_env``
                             wins over ``OPENAI_API_KEY`` (:meth:`Settings.secret`)
``AIRFLOW_HOME``             Airflow's home for ``sitekb run --engine airflow`` and
                             ``sitekb airflow`` (default ``$SITEKB_HOME/airflow``)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sitekb.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SITES_DIR = REPO_ROOT / "dags" / "sites"
DEFAULT_DAGS_FOLDER = REPO_ROOT / "dags"

# Set (unless already set) by every entry point before sitekb's work starts, for the
# libraries that read them: no model hub, no tokenizer threads forked, no GX analytics.
PROCESS_ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "GX_ANALYTICS_ENABLED": "false"}

# What a variable must hold, for the message when it does not.
_EXPECTED = {"embedding_dimensions": "a whole number", "embedding_provider": "'local' or 'openai'",
             "local_runtime": "'auto', 'onnx' or 'torch'"}


class Settings(BaseSettings):
    """Everything sitekb reads from the environment, typed and validated."""

    model_config = SettingsConfigDict(env_prefix="SITEKB_", frozen=True, extra="ignore", populate_by_name=True)

    database_url: str | None = None
    api_database_url: str | None = None
    api_keys: Annotated[tuple[str, ...], NoDecode] = ()
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    home: Path = Field(default_factory=lambda: Path.cwd() / ".sitekb")
    sites_dir: Path = DEFAULT_SITES_DIR
    dags_folder: Path = DEFAULT_DAGS_FOLDER
    embedding_provider: Literal["local", "openai"] | None = None
    embedding_model: str | None = None
    embedding_dimensions: int | None = None
    local_runtime: Literal["auto", "onnx", "torch"] = "auto"
    openai_api_key: str | None = Field(default=None, validation_alias=AliasChoices("openai_api_key", "OPENAI_API_KEY"))
    openai_base_url: str | None = Field(default=None,
                                        validation_alias=AliasChoices("openai_base_url", "OPENAI_BASE_URL"))
    airflow_home: Path | None = Field(default=None, validation_alias=AliasChoices("airflow_home", "AIRFLOW_HOME"))
    # Where the bundled demo site is served when sitekb does not serve it itself (docker-compose's sitekb-demo).
    demo_start_url: str | None = None
    # The variables a site config may name (embedding.api_key_env), captured with the rest.
    environment: Mapping[str, str] = Field(default_factory=dict, exclude=True, repr=False)

    @field_validator("api_keys", "allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value):
        if isinstance(value, str):
            value = value.split(",")
        return tuple(k.strip() for k in value or () if k and k.strip())

    @field_validator("home", "sites_dir", "dags_folder", "airflow_home", mode="before")
    @classmethod
    def _empty_path_is_default(cls, value, info):
        # SITEKB_HOME= (or AIRFLOW_HOME=) means unset, not the current folder.
        if isinstance(value, str) and not value.strip():
            return cls.model_fields[info.field_name].get_default(call_default_factory=True)
        return value

    @field_validator("home", "sites_dir", "dags_folder", "airflow_home")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        return None if path is None else Path(path).expanduser().resolve()

    @field_validator("database_url", "api_database_url", "embedding_model", "openai_api_key", "openai_base_url",
                     "embedding_provider", "embedding_dimensions", "demo_start_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value):
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("local_runtime", mode="before")
    @classmethod
    def _runtime_name(cls, value):
        # SITEKB_LOCAL_RUNTIME= means the default; ONNX or Torch mean onnx and torch.
        if isinstance(value, str):
            return value.strip().lower() or "auto"
        return value

    @classmethod
    def from_env(cls, **cli: object) -> "Settings":
        """The settings of this process: its environment, with non-None CLI values on top.

        Raises ConfigError naming the variable when a value is malformed.
        """
        values = {k: v for k, v in cli.items() if v is not None}
        try:
            return cls(environment=dict(os.environ), **values)
        except ValidationError as exc:
            raise ConfigError(_explain(exc)) from None

    @property
    def airflow_folder(self) -> Path:
        """AIRFLOW_HOME, else $SITEKB_HOME/airflow."""
        return self.airflow_home or self.home / "airflow"

    def secret(self, name: str) -> str | None:
        """The value of the variable ``name`` (a site config's ``embedding.api_key_env``)."""
        if name == "OPENAI_API_KEY":
            return self.openai_api_key
        return self.environment.get(name) or None

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


def _explain(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else "?"
        field = Settings.model_fields.get(name)
        alias = field.validation_alias if field else None
        variable = next((a for a in alias.choices if a.isupper()), None) if isinstance(alias, AliasChoices) else None
        variable = variable or f"SITEKB_{name.upper()}"
        expected = _EXPECTED.get(name, err["msg"])
        problems.append(f"{variable}={err.get('input')!r}: expected {expected}")
    return "invalid settings in the environment: " + "; ".join(problems)
