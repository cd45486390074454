"""Results page cursors: opaque to clients, and impossible to forge.

A cursor names the job, the row its page starts at and the page size, signed with a key the
sandbox draws when it starts (HMAC-SHA256, truncated to 128 bits). A cursor the sandbox did not
issue, or one whose numbers are out of range, is refused (the API answers 400).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

import orjson

MAC_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    """Signs and checks page cursors with one sandbox's key."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def encode(self, job_id: str, offset: int, size: int) -> str:
        """The cursor of the page of ``size`` rows starting at row ``offset`` of ``job_id``."""
        payload = orjson.dumps([job_id, offset, size])
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def decode(self, cursor: str) -> tuple[str, int, int]:
        """(job id, offset, page size); ValueError when the sandbox did not issue ``cursor``."""
        try:
            payload_text, mac_text = cursor.split(".")
            payload, mac = _unb64(payload_text), _unb64(mac_text)
        except (ValueError, binascii.Error):
            raise ValueError("not a page cursor") from None
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise ValueError("not a page cursor of this sandbox")
        job_id, offset, size = orjson.loads(payload)
        return job_id, offset, size

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:MAC_BYTES]
