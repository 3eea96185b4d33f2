"""JWT secrets: from the settings, or generated once into DATA_DIR for development."""

from __future__ import annotations

import stat
from pathlib import Path

import msgspec
import pytest

from schemas.errors import ConfigError
from services.config.jwt_keys import SECRETS_FILE, JwtSecrets, resolve_secrets
from services.config.settings import Settings, load_settings

STRONG_A = "a" * 40
STRONG_B = "b" * 40


def settings_for(data_dir: Path, **env: str) -> Settings:
    return load_settings({"DATA_DIR": str(data_dir), **env}, dotenv=None)


def test_configured_secrets_are_used_and_nothing_is_written(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "var", JWT_SECRET=STRONG_A, JWT_REFRESH_SECRET=STRONG_B)
    assert resolve_secrets(settings) == JwtSecrets(access=STRONG_A, refresh=STRONG_B)
    assert not (tmp_path / "var").exists()


def test_production_uses_configured_secrets(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path / "var",
        APP_ENV="production",
        REDIS_URL="redis://127.0.0.1:1/0",
        JWT_SECRET=STRONG_A,
        JWT_REFRESH_SECRET=STRONG_B,
    )
    assert resolve_secrets(settings) == JwtSecrets(access=STRONG_A, refresh=STRONG_B)
    assert not (tmp_path / "var").exists()


def test_development_secrets_are_generated_once_private_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "var"
    first = resolve_secrets(settings_for(data_dir))
    path = data_dir / SECRETS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(bytes.fromhex(first.access)) == 32
    assert len(bytes.fromhex(first.refresh)) == 32
    assert first.access != first.refresh

    again = resolve_secrets(settings_for(data_dir))
    assert again == first
    assert msgspec.json.decode(path.read_bytes()) == {
        "access": first.access,
        "refresh": first.refresh,
    }


def test_a_missing_one_is_generated_and_the_other_kept(tmp_path: Path) -> None:
    path = tmp_path / SECRETS_FILE
    path.write_text('{"access": "kept-access-secret"}')
    secrets = resolve_secrets(settings_for(tmp_path))
    assert secrets.access == "kept-access-secret"
    assert len(bytes.fromhex(secrets.refresh)) == 32
    assert resolve_secrets(settings_for(tmp_path)) == secrets


def test_one_configured_secret_overrides_the_stored_one(tmp_path: Path) -> None:
    stored = resolve_secrets(settings_for(tmp_path))
    mixed = resolve_secrets(settings_for(tmp_path, JWT_SECRET=STRONG_A))
    assert mixed == JwtSecrets(access=STRONG_A, refresh=stored.refresh)


def test_a_corrupt_secrets_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / SECRETS_FILE).write_text("not json")
    with pytest.raises(ConfigError, match="delete it"):
        resolve_secrets(settings_for(tmp_path))


def test_an_unwritable_data_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="writable DATA_DIR"):
        resolve_secrets(settings_for(blocker / "var"))


def test_repr_never_shows_the_secrets() -> None:
    secrets = JwtSecrets(access=STRONG_A, refresh=STRONG_B)
    assert STRONG_A not in repr(secrets)
    assert STRONG_B not in str(secrets)
