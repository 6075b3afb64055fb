"""Access: API keys, job-scoped watch tokens, dashboard sessions. No aiohttp here.

* API keys (`auth.api_keys`, several at once for rotation) are compared in constant time.
* A watch token opens one job's status and events, read-only, until it expires: it is an expiry
  and an HMAC over (purpose, job id, expiry) with `auth.signing_key`.
* A dashboard session is an HttpOnly cookie carrying an HMAC over (key fingerprint, expiry), so
  the page never puts a key in a URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import time
from pathlib import Path

from service.core.config import Config

SESSION_COOKIE = "tidings_session"
_HEX = re.compile(r"^[0-9a-f]{1,12}$")
SESSION_TTL_S = 12 * 3600


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def load_signing_key(cfg: Config) -> bytes:
    """`auth.signing_key`, else a random key generated once into the embedded_dir (shared by
    the service processes of one machine; set it explicitly when several machines serve)."""
    if cfg.auth.signing_key:
        return cfg.auth.signing_key.encode()
    path = Path(cfg.redis.embedded_dir) / "signing.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        key = _b64(os.urandom(32)).encode()
        f.write(key)
    return key


def fingerprint(key: str) -> str:
    """A short, non-reversible name for an API key (for limits and logs)."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class Auth:
    def __init__(self, api_keys: list[str], signing_key: bytes, token_ttl_s: float) -> None:
        self._keys = [k.encode() for k in api_keys if k]
        self._fingerprints = {fingerprint(k) for k in api_keys if k}
        self._signing = signing_key
        self.token_ttl_s = token_ttl_s

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check_key(self, presented: str) -> str | None:
        """The key's fingerprint if it is one of ours, else None. Constant time per key."""
        p = presented.encode("utf-8", "surrogateescape")
        ok = None
        for k in self._keys:
            if hmac.compare_digest(p, k):
                ok = fingerprint(presented)
        return ok

    def _mac(self, *parts: str) -> str:
        msg = "\0".join(parts).encode()
        return _b64(hmac.new(self._signing, msg, hashlib.sha256).digest()[:18])

    def watch_token(self, job_id: str, now: float | None = None) -> str:
        return self.watch_grant(job_id, now)[0]

    def watch_grant(self, job_id: str, now: float | None = None) -> tuple[str, int]:
        """A watch token for the job, and when it expires (Unix seconds)."""
        exp = int((now or time.time()) + self.token_ttl_s)
        return f"{exp:x}.{self._mac('watch', job_id, str(exp))}", exp

    def check_watch_token(self, token: str, job_id: str, now: float | None = None) -> str:
        """'ok', 'expired' or 'invalid'."""
        exp_hex, _, mac = token.partition(".")
        if not _HEX.match(exp_hex):  # strictly what watch_token writes: no "0x", "_" or sign
            return "invalid"
        exp = int(exp_hex, 16)
        good = self._mac("watch", job_id, str(exp)).encode()
        if exp < 0 or not hmac.compare_digest(mac.encode("utf-8", "surrogateescape"), good):
            return "invalid"
        if exp < (now or time.time()):
            return "expired"
        return "ok"

    def session(self, key_fingerprint: str, now: float | None = None) -> str:
        exp = int((now or time.time()) + SESSION_TTL_S)
        return f"{key_fingerprint}.{exp:x}.{self._mac('session', key_fingerprint, str(exp))}"

    def check_session(self, value: str, now: float | None = None) -> str | None:
        fp, _, rest = value.partition(".")
        exp_hex, _, mac = rest.partition(".")
        if not _HEX.match(exp_hex):
            return None
        exp = int(exp_hex, 16)
        good = self._mac("session", fp, str(exp)).encode()
        if exp < (now or time.time()) or not hmac.compare_digest(
            mac.encode("utf-8", "surrogateescape"), good
        ):
            return None
        # a session ends with its key: removing a key from auth.api_keys logs its sessions out
        return fp if fp in self._fingerprints else None
