"""One classifier shared by threads: calls really overlap (the GIL is released while the library
works), results equal a single thread's, and closing under load neither crashes nor leaks a call.

No timing decides a pass: overlap is counted. The interpreter's switch interval is raised so that
a thread gives up the GIL only when it blocks, i.e. inside the library call; another thread
entering classify then proves the first one is running in the library without the GIL."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

import gemma_cyber

THREADS = 4


@pytest.fixture
def no_forced_switches():
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    yield
    sys.setswitchinterval(previous)


@pytest.mark.parametrize("backend", ["cpu", "onnxruntime", "wgpu"])
def test_threads_share_one_classifier_and_overlap(backend, rows, no_forced_switches):
    calls_per_thread = 4 if backend != "wgpu" else 2
    batch = rows if backend != "wgpu" else rows[:1024]
    with gemma_cyber.Classifier(backend=backend, num_threads=1) as classifier:
        reference = classifier.classify(batch)
        lock = threading.Lock()
        state = {"running": 0, "most": 0, "overlapping_starts": 0}
        results: list = []
        errors: list = []
        start = threading.Barrier(THREADS)

        def work(offset: int) -> None:
            try:
                start.wait()
                for call in range(calls_per_thread):
                    shifted = np.roll(batch, offset + call, axis=0)
                    with lock:
                        state["running"] += 1
                        state["most"] = max(state["most"], state["running"])
                        state["overlapping_starts"] += state["running"] > 1
                    try:
                        got = classifier.classify(shifted)
                    finally:
                        with lock:
                            state["running"] -= 1
                    results.append((offset + call, got))
            except BaseException as e:  # reported by the main thread
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t * 10,)) for t in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors
    assert len(results) == THREADS * calls_per_thread
    for shift, got in results:
        np.testing.assert_allclose(got, np.roll(reference, shift), rtol=0, atol=1e-6)
    print(f"{backend}: at most {state['most']} calls at once, {state['overlapping_starts']} started during another")
    assert state["most"] >= 2, "classify held the GIL: no call started while another ran"


def test_close_while_threads_classify_is_safe(rows):
    classifier = gemma_cyber.Classifier(backend="cpu")
    outcomes: list = []

    def work() -> None:
        for _ in range(20):
            try:
                outcomes.append(classifier.classify(rows[:512]).shape)
            except gemma_cyber.InvalidArgumentError as e:
                outcomes.append(e.status)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in threads:
        t.start()
    classifier.close()
    for t in threads:
        t.join()
    assert len(outcomes) == THREADS * 20
    assert set(outcomes) <= {(512,), gemma_cyber.Status.INVALID_ARGUMENT}
    assert classifier._handle is None  # freed by the last call out
