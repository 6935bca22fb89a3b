"""The library's statuses and the exceptions that carry them."""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    """Result code of the C API (``gemma_cyber_status``); every failure carries one."""

    OK = 0
    INVALID_ARGUMENT = 1
    DIMENSION_MISMATCH = 2
    NON_FINITE_INPUT = 3
    MODEL_NOT_FOUND = 4
    MODEL_INVALID = 5
    BACKEND_UNAVAILABLE = 6
    BACKEND_FAILURE = 7
    PANIC = 8


class Error(Exception):
    """A failed call: ``status`` says what failed, ``message`` is the library's description
    ("GEMMA_CYBER_STATUS_NAME: ...")."""

    status: Status
    message: str

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class InvalidArgumentError(Error, ValueError):
    """Bad options or arguments (an unknown backend, a threshold outside [0, 1], an array that is
    not 2-D numbers, a closed classifier). Fix the call."""


class DimensionMismatchError(Error, ValueError):
    """The rows are not ``input_dim`` wide (the message names both widths)."""


class NonFiniteInputError(Error, ValueError):
    """NaN or infinity in the embeddings (the message gives row and column)."""


class ModelNotFoundError(Error):
    """``model_path`` cannot be opened."""


class ModelInvalidError(Error):
    """The model file is malformed, or its SHA-256 is not ``model_sha256``."""


class BackendUnavailableError(Error):
    """The requested backend cannot run here (no ONNX Runtime library, no GPU adapter, no plugin)."""


class BackendFailureError(Error):
    """The backend failed while running; the classifier may work again."""


class PanicError(Error):
    """An internal bug caught at the C boundary; please report it with the message."""


_BY_STATUS: dict[Status, type[Error]] = {
    Status.INVALID_ARGUMENT: InvalidArgumentError,
    Status.DIMENSION_MISMATCH: DimensionMismatchError,
    Status.NON_FINITE_INPUT: NonFiniteInputError,
    Status.MODEL_NOT_FOUND: ModelNotFoundError,
    Status.MODEL_INVALID: ModelInvalidError,
    Status.BACKEND_UNAVAILABLE: BackendUnavailableError,
    Status.BACKEND_FAILURE: BackendFailureError,
    Status.PANIC: PanicError,
}


def error_for(status: int, message: str) -> Error:
    """The exception for a status returned by the library, with its message."""
    try:
        known = Status(status)
    except ValueError:
        return PanicError(Status.PANIC, f"GEMMA_CYBER_STATUS_PANIC: unknown status {status}: {message}")
    return _BY_STATUS.get(known, Error)(known, message)


def invalid_argument(message: str) -> InvalidArgumentError:
    """An INVALID_ARGUMENT found on the Python side, worded like the library's own."""
    return InvalidArgumentError(Status.INVALID_ARGUMENT, f"GEMMA_CYBER_STATUS_INVALID_ARGUMENT: {message}")
