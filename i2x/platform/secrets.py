"""The one redaction function: every text i2x writes that may hold a URL goes through it.

Masked: the password of ``scheme://user:password@host`` (also an empty user, and a
password that itself holds ``@``), and the values of ``password=``, ``passwd=``,
``pwd=``, ``secret=``, ``token=``, ``access_key=``, ``secret_key=`` in query strings.
"""

from __future__ import annotations

import re

MASK = "***"
# user:password@ inside a URL's authority: the password runs to the last "@" before the path.
_USERINFO = re.compile(r"([a-zA-Z][\w+.-]*://[^:/@\s]*):([^/\s]*)@")
_QUERY = re.compile(r"(?i)([?&;](?:password|passwd|pwd|secret|token|access_key|secret_key)=)[^&;#\s,]*")


def redact(text: str) -> str:
    """``text`` with every URL password and secret query value replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m.group(1)}:{MASK}@", text)
    return _QUERY.sub(lambda m: m.group(1) + MASK, text)


def has_secret(text: str) -> bool:
    return redact(text) != text
