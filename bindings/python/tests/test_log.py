"""The library's messages reach the callback set with set_log_callback, and stop when it is unset."""

from __future__ import annotations

import sys

import pytest

import gemma_cyber


@pytest.fixture
def messages():
    received = []
    gemma_cyber.set_log_callback(lambda level, message: received.append((level, message)))
    yield received
    gemma_cyber.set_log_callback(None)


def started(received):
    return [m for level, m in received if level == gemma_cyber.LogLevel.INFO and m.startswith("cpu backend started on ")]


def test_a_create_reports_the_backend_it_started(messages):
    with gemma_cyber.Classifier(backend="cpu") as classifier:
        device = classifier.device_name
    assert started(messages) == [f"cpu backend started on {device}"]
    assert all(isinstance(level, gemma_cyber.LogLevel) for level, _ in messages)


def test_no_message_arrives_once_the_callback_is_unset(messages):
    gemma_cyber.set_log_callback(None)
    with gemma_cyber.Classifier(backend="cpu"):
        pass
    assert messages == []


def test_a_callback_that_raises_does_not_stop_the_library(monkeypatch):
    raised = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: raised.append(info.exc_value))

    def fails(level, message):
        raise RuntimeError("from the callback")

    gemma_cyber.set_log_callback(fails)
    try:
        with gemma_cyber.Classifier(backend="cpu") as classifier:
            assert classifier.input_dim == 768
    finally:
        gemma_cyber.set_log_callback(None)
    assert any(isinstance(e, RuntimeError) for e in raised)


def test_a_callback_must_be_callable():
    with pytest.raises(gemma_cyber.InvalidArgumentError, match="callable"):
        gemma_cyber.set_log_callback("not a function")


def test_setting_the_callback_from_inside_it_is_refused():
    # The library refused it but the package dropped the trampoline the library still called.
    import gc

    refused = []
    calls = []

    def replaces_itself(level, message):
        calls.append(message)
        try:
            gemma_cyber.set_log_callback(lambda level, message: None)
        except gemma_cyber.InvalidArgumentError as e:
            refused.append(e)

    gemma_cyber.set_log_callback(replaces_itself)
    try:
        for _ in range(3):
            with gemma_cyber.Classifier(backend="cpu"):
                pass
            gc.collect()
    finally:
        gemma_cyber.set_log_callback(None)
    assert len(calls) == 3 and len(refused) == 3
