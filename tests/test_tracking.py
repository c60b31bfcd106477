import pytest

from i2x.platform.secrets import redact
from i2x.tuning.study import resolve_storage


def test_passwords_in_urls_are_masked_before_logging():
    assert redact("postgresql://ana:s3cr3t@db:5432/i2x") == "postgresql://ana:***@db:5432/i2x"
    assert redact("tune.storage=postgresql+psycopg://u:p%40ss@h/db,x=1") == "tune.storage=postgresql+psycopg://u:***@h/db,x=1"
    assert redact("sqlite:///mlruns/optuna.db") == "sqlite:///mlruns/optuna.db"


@pytest.mark.parametrize(("url", "masked"), [
    ("postgresql://u:p@ss@h:5432/db", "postgresql://u:***@h:5432/db"),  # a password holding "@"
    ("postgresql://:pw@h/db", "postgresql://:***@h/db"),  # no user name
    ("postgresql://u@h/db?password=pw&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require"),
    ("mysql://u@h/db?sslmode=x&PWD=pw", "mysql://u@h/db?sslmode=x&PWD=***"),
    ("s3://bucket/key?token=abc#frag", "s3://bucket/key?token=***#frag"),
    ("no study 'x' in postgresql+psycopg://ana:s3cr3t@db/i2x; start it", "no study 'x' in postgresql+psycopg://ana:***@db/i2x; start it"),
    ("https://host:8080/x?email=a@b", "https://host:8080/x?email=a@b"),  # a port is not a password
    ("http://127.0.0.1:5000/#/experiments/1?workflowType=machine_learning", "http://127.0.0.1:5000/#/experiments/1?workflowType=machine_learning"),
])
def test_one_redaction_for_every_url_shape(url, masked):
    assert redact(url) == masked


def test_storage_url_comes_from_the_argument_then_the_environment(monkeypatch):
    monkeypatch.delenv("I2X_OPTUNA_STORAGE", raising=False)
    assert resolve_storage("") == "sqlite:///mlruns/optuna.db"
    monkeypatch.setenv("I2X_OPTUNA_STORAGE", "postgresql://u:p@h/db")
    assert resolve_storage("") == "postgresql://u:p@h/db"
    assert resolve_storage("journal:/tmp/j.log") == "journal:/tmp/j.log"
