"""Person-name folding for accent- and case-insensitive search (Vietnamese first).

`fold_text("Nguyễn^Văn An")` is ``"nguyen van an"``: lower case, diacritics removed,
đ/Đ mapped to d (Unicode decomposition leaves đ alone: it is a letter of its own, not
d plus a mark), and the PN component separator ``^`` and ``=`` turned into spaces.
"""

from __future__ import annotations

import unicodedata

_SPECIAL = str.maketrans("đĐðÐłŁ", "ddddll")
_SEPARATORS = str.maketrans("^=,\t", "    ")


def strip_diacritics(text: str) -> str:
    """Remove combining marks; keep case. ``"Đặng"`` becomes ``"Dang"``."""
    text = text.translate(str.maketrans("đĐ", "dD"))
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def fold_text(text: str) -> str:
    """Lower-case, accent-free, single-spaced text for fuzzy matching."""
    text = unicodedata.normalize("NFD", text.translate(_SPECIAL).lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(text.translate(_SEPARATORS).split())


def lower_name(text: str) -> str:
    """Case-folded name with diacritics kept, for case-insensitive PN matching (PS3.4 C.2.2.2.1)."""
    return unicodedata.normalize("NFC", text).lower()
