"""The API's bearer token: generated once into the data directory (mode 0600), compared in constant time.

Why a file in the data directory: whoever may read the recording (root, or the group given access
to DATA) can read the token too, and nobody else; there is no second secret store to manage.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

TOKEN_FILE = "api-token"


def load_or_create_token(data_dir: Path) -> str:
    """The token in DATA/api-token, created (0600, atomically) on first use."""
    path = data_dir / TOKEN_FILE
    try:
        token = path.read_text().strip()
        if token:
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)   # a copy restored with a loose mode is tightened, not trusted as is
            return token
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = data_dir / f".{TOKEN_FILE}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    try:
        os.link(tmp, path)          # first writer wins when two servers start at once
    except FileExistsError:
        return load_or_create_token(data_dir)
    finally:
        tmp.unlink()
    return token


def authorized(header: str | None, token: str) -> bool:
    """True when ``Authorization: Bearer <token>`` carries the token."""
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode(), token.encode())
