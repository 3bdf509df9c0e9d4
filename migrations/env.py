"""Alembic environment: the database is DATABASE_URL (or the default SQLite), or the one a caller passes."""

from logging.config import fileConfig

from alembic import context

from app.batches import models as batch_models  # noqa: F401  (registers the files and batches tables)
from app.db import make_engine
from app.gate_runs import models as gate_models  # noqa: F401  (registers the gate_runs table)
from app.keys import models as key_models  # noqa: F401  (registers the api_keys table)
from app.models import Base
from app.settings import load_settings
from app.webhooks import models as webhook_models  # noqa: F401  (registers the webhooks tables)

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    """An explicit sqlalchemy.url (tests), else the app's setting from the environment."""
    return config.get_main_option("sqlalchemy.url") or load_settings().database_url


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(database_url())
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
