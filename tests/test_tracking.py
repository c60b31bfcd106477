from i2x.tracking import redact_secrets
from i2x.tuning import redact, resolve_storage


def test_passwords_in_urls_are_masked_before_logging():
    assert redact_secrets("postgresql://ana:s3cr3t@db:5432/i2x") == "postgresql://ana:***@db:5432/i2x"
    assert redact_secrets("tune.storage=postgresql+psycopg://u:p%40ss@h/db,x=1") == "tune.storage=postgresql+psycopg://u:***@h/db,x=1"
    assert redact_secrets("sqlite:///mlruns/optuna.db") == "sqlite:///mlruns/optuna.db"
    assert "s3cr3t" not in redact("postgresql://ana:s3cr3t@db:5432/i2x")


def test_storage_url_comes_from_the_argument_then_the_environment(monkeypatch):
    monkeypatch.delenv("I2X_OPTUNA_STORAGE", raising=False)
    assert resolve_storage("") == "sqlite:///mlruns/optuna.db"
    monkeypatch.setenv("I2X_OPTUNA_STORAGE", "postgresql://u:p@h/db")
    assert resolve_storage("") == "postgresql://u:p@h/db"
    assert resolve_storage("journal:/tmp/j.log") == "journal:/tmp/j.log"
