"""Password hashing (Argon2id, argon2-cffi) and the password policy."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# RFC 9106 §4 second recommended option (64 MiB, 3 passes, 4 lanes) is heavy for the
# old PCs hospitals run this on; argon2-cffi's defaults (RFC 9106 low-memory profile)
# cost ~50 ms here. Verified credentials are cached (accounts.py), so this is paid once.
_HASHER = PasswordHasher()

# Passwords that appear at the top of every breach corpus and in Vietnamese usage; a
# policy refuses these (case-insensitively) whatever their length.
BREACHED = frozenset("""
123456 123456789 12345678 password 12345 qwerty 1234567 111111 123123 1234567890
000000 abc123 password1 iloveyou 1q2w3e4r qwerty123 admin admin123 administrator
letmein welcome welcome1 passw0rd p@ssw0rd p@ssword changeme matkhau matkhau123
123456a 123456aa anhyeuem anhyeuem123 minipacs minipacs123 hospital benhvien
benhvien123 bacsi bacsi123 radiology password123 qwertyuiop 1qaz2wsx zaq12wsx
""".split())


@dataclass(frozen=True)
class PasswordPolicy:
    min_length: int = 10
    history: int = 5

    def problem(self, password: str, username: str) -> str:
        """Why `password` is refused ("" when acceptable)."""
        if len(password) < self.min_length:
            return f"a password needs at least {self.min_length} characters"
        lowered = password.lower()
        if lowered in BREACHED:
            return "that password is in lists of breached passwords; choose another"
        if len(username) >= 3 and username.lower() in lowered:
            return "a password must not contain the user name"
        kinds = sum(any(test(c) for c in password)
                    for test in (str.islower, str.isupper, str.isdigit,
                                 lambda c: not c.isalnum()))
        if kinds < 3:
            return ("a password needs three of: lower-case letters, upper-case letters, "
                    "digits, other characters")
        return ""


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def one_time_password() -> str:
    """A random password meeting any policy here: printed once, changed at first login."""
    while True:
        candidate = secrets.token_urlsafe(12) + "-7a"
        if PasswordPolicy().problem(candidate, "") == "":
            return candidate
