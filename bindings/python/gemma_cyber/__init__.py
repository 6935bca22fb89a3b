"""gemma_cyber: classifies text embeddings as cyber-related or not with the gemma_cyber MLP.

A thin binding of the C library (bundled in this package, with its backend plugins)::

    import numpy as np
    import gemma_cyber

    with gemma_cyber.Classifier() as classifier:
        probabilities = classifier.classify(np.load("embeddings.npy"))

Every failure raises a :class:`Error` subclass carrying the library's :class:`Status` and message.
"""

from __future__ import annotations

from ._classifier import Classifier
from ._errors import (
    BackendFailureError,
    BackendUnavailableError,
    DimensionMismatchError,
    Error,
    InvalidArgumentError,
    ModelInvalidError,
    ModelNotFoundError,
    NonFiniteInputError,
    PanicError,
    Status,
)
from ._library import library_path, lib as _lib
from ._log import LogLevel, set_log_callback


def version() -> str:
    """The C library's version, e.g. ``"0.1.0"``."""
    return (_lib.gemma_cyber_version() or b"").decode()


def abi_version() -> int:
    """The C ABI version the loaded library implements."""
    return int(_lib.gemma_cyber_abi_version())


__version__ = version()

__all__ = [
    "BackendFailureError",
    "BackendUnavailableError",
    "Classifier",
    "DimensionMismatchError",
    "Error",
    "InvalidArgumentError",
    "LogLevel",
    "ModelInvalidError",
    "ModelNotFoundError",
    "NonFiniteInputError",
    "PanicError",
    "Status",
    "abi_version",
    "library_path",
    "set_log_callback",
    "version",
]
