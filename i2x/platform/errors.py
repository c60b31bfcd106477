"""The one exception type users see.

Every user mistake (bad config key, missing data, wrong checkpoint) raises
:class:`I2XError` with a single-line message that says what was wrong and how to
fix it. The CLI prints it as ``i2x: error: <message>`` and exits with status 2.
"""

from __future__ import annotations


class I2XError(Exception):
    """A user-facing error with a one-line, actionable message."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
