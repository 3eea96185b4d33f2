"""The two JWT keys: from the settings, or generated once and kept in DATA_DIR (development)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import msgspec

from schemas.errors import ConfigError
from services.config.settings import Settings

logger = logging.getLogger(__name__)

SECRETS_FILE = "secrets.json"
_GENERATED_BYTES = 32


class JwtSecrets(msgspec.Struct, frozen=True, kw_only=True):
    """HS256 keys of access tokens (`JWT_SECRET`) and refresh tokens (`JWT_REFRESH_SECRET`)."""

    access: str
    refresh: str

    def __repr__(self) -> str:
        # Keeps the keys out of logs, tracebacks and assertion messages.
        return "JwtSecrets(access=<redacted>, refresh=<redacted>)"


class _SecretsFile(msgspec.Struct, frozen=True, kw_only=True):
    access: str = ""
    refresh: str = ""


def resolve_secrets(settings: Settings) -> JwtSecrets:
    """The configured secrets; in development or test, a missing one comes from DATA_DIR.

    Generated secrets are kept in `DATA_DIR/secrets.json` (mode 0600) so that tokens outlive a
    restart and every process sharing DATA_DIR (edge, `rdisplay token issue`) agrees on them.
    """
    access, refresh = settings.jwt_secret, settings.jwt_refresh_secret
    if access is not None and refresh is not None:
        return JwtSecrets(access=access, refresh=refresh)
    if settings.production:
        # load_settings refuses this already; never generate keys for production.
        msg = "APP_ENV=production needs JWT_SECRET and JWT_REFRESH_SECRET"
        raise ConfigError(msg)
    stored = _stored_secrets(settings.data_dir / SECRETS_FILE)
    return JwtSecrets(access=access or stored.access, refresh=refresh or stored.refresh)


def _stored_secrets(path: Path) -> _SecretsFile:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path.with_name(path.name + ".lock")):
            stored = _read(path)
            if stored.access and stored.refresh:
                return stored
            complete = _SecretsFile(
                access=stored.access or secrets.token_hex(_GENERATED_BYTES),
                refresh=stored.refresh or secrets.token_hex(_GENERATED_BYTES),
            )
            _write(path, complete)
    except OSError as exc:
        msg = (
            f"cannot keep development JWT secrets in `{path}` ({exc.strerror or exc}): "
            "choose a writable DATA_DIR or set JWT_SECRET and JWT_REFRESH_SECRET"
        )
        raise ConfigError(msg) from None
    logger.info("development JWT secrets generated", extra={"path": str(path)})
    return complete


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Serializes processes that start together on one DATA_DIR, so they agree on one key."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read(path: Path) -> _SecretsFile:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return _SecretsFile()
    try:
        return msgspec.json.decode(raw, type=_SecretsFile)
    except msgspec.DecodeError:
        msg = (
            f"`{path}` is not a secrets file of this service: delete it to generate new "
            "development secrets (tokens issued with the old ones stop working)"
        )
        raise ConfigError(msg) from None


def _write(path: Path, content: _SecretsFile) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(msgspec.json.encode(content))
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, 0o600)  # O_CREAT's mode is narrowed by the umask, never widened; be sure
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
