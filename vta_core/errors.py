"""One error class for "this input item cannot be used".

Stages catch :class:`ItemError` per item and write it as a failed manifest row
(``error_type`` = the class of problem, ``error_message`` = one line naming the value); the batch goes on.
"""

from __future__ import annotations


class ItemError(Exception):
    """An input item (a file, a window, a clip) that cannot be used; ``error_type`` names the problem."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
