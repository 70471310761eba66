"""Errors raised on purpose, split by who can fix them (light: no torch, so the API shares them).

A ``UserInputError`` means the request itself is wrong (unknown architecture, bad calibration data):
retrying cannot help, so a worker fails the job at once and shows ``code``, ``field`` and the message.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine raises deliberately."""

    code = "engine_error"


class UserInputError(EngineError):
    """The input names something the engine cannot use; the message says what to change."""

    code = "invalid_input"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class UnsupportedModelError(UserInputError):
    code = "unsupported_model"


class ModelLoadError(UserInputError):
    code = "model_load_failed"


class UnsafeModelError(UserInputError):
    code = "unsafe_model"


class CalibrationError(UserInputError):
    code = "invalid_calibration"


class SparsityError(UserInputError):
    code = "invalid_sparsity"
