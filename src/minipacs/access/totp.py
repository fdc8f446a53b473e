"""Time-based one-time passwords (RFC 6238, over HOTP, RFC 4226) as administrators'
second factor: 6 digits, 30-second steps, SHA-1, as every authenticator app expects.

The secret is a shared secret: the server must be able to recompute codes, so it is
kept in the index as is (base32), not hashed; database backups must be protected
accordingly (docs/security.md). A code is accepted for the step before and after the
current one (clock drift), and never twice: the last step used is kept per user and
only later steps verify (RFC 6238 §5.2).
"""

from __future__ import annotations

import time

import pyotp
import segno

ISSUER = "minipacs"
DIGITS = 6
STEP_SECONDS = 30
DRIFT_STEPS = 1


def new_secret() -> str:
    """A random 160-bit secret in base32 (RFC 4226 §4 recommends 160 bits)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, username: str) -> str:
    """The otpauth:// URI an authenticator app reads (from a QR code or pasted)."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER)


def qr_code_data_uri(uri: str) -> str:
    """The otpauth:// URI as a QR code (ISO/IEC 18004, error correction M), an SVG data
    URI an <img> shows (made here: the viewer's CSP loads nothing from elsewhere)."""
    return str(segno.make(uri, error="m", micro=False).svg_data_uri(scale=5, border=4))


def well_formed(code: str) -> bool:
    return len(code) == DIGITS and code.isascii() and code.isdigit()


def matching_step(secret: str, code: str, now: float | None = None) -> int | None:
    """The time step (`unix time // 30`) whose code `code` is, within the drift window;
    None when it is none of them."""
    if not well_formed(code):
        return None
    totp = pyotp.TOTP(secret)
    current = int((time.time() if now is None else now) // STEP_SECONDS)
    for step in range(current + DRIFT_STEPS, current - DRIFT_STEPS - 1, -1):
        # pyotp.utils.strings_equal compares in constant time.
        if pyotp.utils.strings_equal(totp.at(step * STEP_SECONDS), code):
            return step
    return None
