"""Database URLs as people write them, and ``COMMS_*`` variables that name no key."""

from __future__ import annotations

import pytest

from comms_pipeline.core.errors import ConfigError
from comms_pipeline.settings.config import load_settings


@pytest.mark.parametrize("written", ["postgres://u@db/comms", "postgresql://u@db/comms",
                                     "postgresql+psycopg2://u@db/comms"])
def test_postgres_url_spellings_use_psycopg2(written):
    settings = load_settings(environ={"COMMS_DATABASE_URL": written})
    assert settings.database_url == "postgresql+psycopg2://u@db/comms"


def test_unknown_variable_names_the_closest_known_one():
    with pytest.raises(ConfigError, match="COMMS_GATEWAYS_SMS_BACKEND"):
        load_settings(environ={"COMMS_GATEWAYS_SMS_BACKEDN": "smpp"})


def test_variables_read_elsewhere_are_not_unknown():
    load_settings(environ={"COMMS_TEST_PG_URL": "x", "COMMS_DEBUG": "1", "COMMS_LOG_LEVEL": "x"})
