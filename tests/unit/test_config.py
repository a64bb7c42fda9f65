from __future__ import annotations

import pytest

from comms_pipeline.core.errors import ConfigError
from comms_pipeline.settings.config import load_settings


def test_defaults_work_without_any_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings(environ={})
    assert s.database_url == f"sqlite:///{tmp_path / 'var'}/comms.db"
    assert s.gateways.sms.backend == "local"


def test_file_then_environment(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[database]\nurl = "sqlite:///x.db"\n[gateways.sms]\nbackend = "smpp"\n'
                   'port = 2776\n')
    s = load_settings(cfg, environ={"COMMS_GATEWAYS_SMS_PORT": "2777",
                                    "COMMS_DATABASE_URL": "postgresql://h/db"})
    assert s.database_url == "postgresql+psycopg2://h/db"  # the driver named
    assert (s.gateways.sms.backend, s.gateways.sms.port) == ("smpp", 2777)


def test_invalid_value_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"gateways\.sms\.port"):
        load_settings(environ={"COMMS_GATEWAYS_SMS_PORT": "many"})


def test_unknown_key_is_refused(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[daemons]\npoll_intervall = 3\n")
    with pytest.raises(ConfigError, match=r"daemons\.poll_intervall: Extra inputs"):
        load_settings(cfg, environ={})


def test_bad_toml_and_missing_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[database\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(cfg, environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_bad_cron_expression(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[scheduler.jobs]\nmonitor = "* * *"\n')
    with pytest.raises(ConfigError, match="5 fields"):
        load_settings(cfg, environ={})


def test_a_cron_expression_out_of_range_is_refused_where_it_is_written(tmp_path):
    """Checked by the parser the scheduler uses, so it cannot stop the scheduler later."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[scheduler.jobs]\nmonitor = "61 * * * *"\n')
    with pytest.raises(ConfigError, match=r"scheduler\.jobs.*monitor: invalid cron expression "
                                          r"'61 \* \* \* \*'"):
        load_settings(cfg, environ={})
    from comms_pipeline.notifications.types import parse_definitions

    with pytest.raises(Exception, match="invalid cron expression '0 25 1 \\* \\*'"):
        parse_definitions({"types": {"T": {
            "name": "t", "classification": "financial", "entity": "wallet",
            "template": "X", "population_query": "SELECT 1", "cron": "0 25 1 * *"}}})


def test_malformed_json_in_the_environment_and_unknown_job_names_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"COMMS_GATEWAYS_WEBHOOK_RETRY_SCHEDULE_SECONDS.*"
                                          r"not valid JSON"):
        load_settings(environ={"COMMS_GATEWAYS_WEBHOOK_RETRY_SCHEDULE_SECONDS": "[1,2"})
    cfg = tmp_path / "c.toml"
    cfg.write_text('[scheduler.jobs]\nmonitr = "* * * * *"\n')
    with pytest.raises(ConfigError, match=r"scheduler\.jobs.*no job named 'monitr'"):
        load_settings(cfg, environ={})


def test_metrics_port_is_unset_by_default_and_read_from_file_or_environment(tmp_path):
    assert load_settings(environ={}).daemons.metrics_port is None
    cfg = tmp_path / "c.toml"
    cfg.write_text("[daemons]\nmetrics_port = 9101\n")
    assert load_settings(cfg, environ={}).daemons.metrics_port == 9101
    assert load_settings(environ={"COMMS_DAEMONS_METRICS_PORT": "9200"}
                         ).daemons.metrics_port == 9200
    with pytest.raises(ConfigError, match=r"daemons\.metrics_port"):
        load_settings(environ={"COMMS_DAEMONS_METRICS_PORT": "70000"})
