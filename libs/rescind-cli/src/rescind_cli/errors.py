"""The one error type commands raise to end with a message and an exit code."""

from __future__ import annotations


class CliError(Exception):
    """Printed as `rescind: error: <message>` on stderr; the process exits with `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
