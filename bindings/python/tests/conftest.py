"""Shared fixtures: the repository's golden vectors and models."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
GOLDEN = REPO / "tests" / "golden"
TOLERANCE = 1e-5  # every backend agrees with the float64 reference to this, as in the Rust suite


@pytest.fixture(scope="session")
def repo() -> pathlib.Path:
    return REPO


@pytest.fixture(scope="session")
def golden() -> tuple:
    """64 rows of the built-in model's golden inputs, the reference probabilities and labels."""
    return (
        np.load(GOLDEN / "default.inputs.npy"),
        np.load(GOLDEN / "default.expected.npy"),
        np.load(GOLDEN / "default.labels.npy").astype(bool),
    )


@pytest.fixture(scope="session")
def rows() -> np.ndarray:
    """A batch big enough that one classify call takes a while on every backend."""
    return np.random.default_rng(17).standard_normal((4096, 768)).astype(np.float32)
