"""checks.py: the one set of value rules (``check_value``) every door uses, and the bounds they
share (``MAX_INPUT_SIZE`` and the others)."""
import math
import os

import numpy as np
import pytest

from checks import (
    MAX_BATCH_SIZE,
    MAX_FRAMES,
    MAX_INPUT_SIZE,
    MAX_MARGIN,
    MAX_PIXELS,
    MAX_SIDE,
    MAX_WORKERS,
    as_number,
    check_argument,
    check_value,
)
from errors import UserError

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("kind,good,bad", [
    ("size", [1, 299, MAX_INPUT_SIZE, 64.0, "128"],
     [0, -1, MAX_INPUT_SIZE + 1, 10 ** 9, 2.5, NAN, INF, True, None, "big", [64], ""]),
    ("positive", [1e-6, 0.5, 3, "2e-3"], [0, -1, NAN, INF, -INF, True, None, "x", [1]]),
    ("finite", [0, -3.5, 1e30], [NAN, INF, -INF, False, None, "nan", {}]),
    ("probability", [0, 0.5, 1, 1.0], [-0.01, 1.01, NAN, INF, True, None, "half"]),
    ("fraction", [0, 0.99], [1, -0.1, NAN, INF]),
    ("nonneg", [0, 5.5], [-1, NAN, INF]),
    ("posint", [1, 7, 3.0], [0, -2, 1.5, NAN, INF, True, "three"]),
    ("nonneg_int", [0, 4], [-1, NAN, 0.5]),
    ("batch_size", [1, MAX_BATCH_SIZE], [0, -1, MAX_BATCH_SIZE + 1, NAN, 2.5, None]),
    ("workers", [0, MAX_WORKERS], [-1, MAX_WORKERS + 1, NAN, INF]),
    ("pixels", [1, MAX_PIXELS], [0, MAX_PIXELS + 1, 10 ** 30, NAN]),
    ("frames", [1, MAX_FRAMES], [0, -1, MAX_FRAMES + 1, INF]),
    ("side", [1, MAX_SIDE], [0, MAX_SIDE + 1, -INF]),
    ("margin", [1e-3, 1.3, MAX_MARGIN], [0, -1, MAX_MARGIN * 1.01, 1e300, NAN, INF, "x"]),
])
def test_each_kind_takes_its_values_and_refuses_the_rest(kind, good, bad):
    for value in good:
        out = check_value("probe", value, kind)
        assert out == as_number(value) and not isinstance(out, bool)
    for value in bad:
        with pytest.raises(UserError) as info:
            check_value("--probe", value, kind)
        text = str(info.value)
        # one line naming where the value came from, the value and what is accepted
        assert text.startswith("--probe: expected ") and repr(value) in text and "\n" not in text


def test_integers_come_back_as_integers_and_optional_kinds_take_none():
    assert check_value("s", 64.0, "size") == 64 and isinstance(check_value("s", 64.0, "size"), int)
    assert check_value("s", None, "size?") is None
    with pytest.raises(UserError, match=r"s: expected a size in pixels from 1 to 2048, got 0"):
        check_value("s", 0, "size?")


def test_the_size_bound_is_one_number():
    assert MAX_INPUT_SIZE == 2048
    assert check_value("x", MAX_INPUT_SIZE, "size") == MAX_INPUT_SIZE
    with pytest.raises(UserError, match=f"from 1 to {MAX_INPUT_SIZE}"):
        check_value("x", MAX_INPUT_SIZE + 1, "size")


def test_an_unknown_kind_is_a_programming_error_not_a_user_error():
    with pytest.raises(ValueError, match="unknown kind 'percent'"):
        check_value("x", 3, "percent")


def test_as_number_keeps_text_that_is_not_a_finite_number():
    assert as_number("1e-4") == 1e-4 and as_number("abc") == "abc"
    assert as_number("nan") == "nan" and as_number("inf") == "inf"
    assert math.isnan(as_number(NAN))


def test_a_keyword_argument_takes_no_text_for_a_number_and_names_itself():
    """The API's door: "3" is not 3 (a config file's YAML reading does not apply), NumPy scalars
    are the numbers they hold, a choice comes back as the choice, the error names the keyword."""
    assert check_value("k", "3", "frames") == 3
    with pytest.raises(UserError, match=r"^frames: expected an integer, got '3'$") as info:
        check_argument("frames", "3", "frames")
    assert info.value.arg == "frames"
    out = check_argument("batch_size", np.int64(4), "batch_size")
    assert out == 4 and type(out) is int
    assert type(check_argument("margin", np.float32(1.5), "margin")) is float
    assert check_argument("num_classes", 2.0, (None, 1, 2)) == 2
    assert type(check_argument("num_classes", 2.0, (None, 1, 2))) is int
    assert check_argument("num_classes", None, (None, 1, 2)) is None
    for value in (np.bool_(True), np.float64("nan"), "", []):
        with pytest.raises(UserError) as info:
            check_argument("every", value, "frames?")
        assert info.value.arg == "every" and str(info.value).startswith("every: expected ")



def test_default_threads_respect_affinity_ranks_and_workers(monkeypatch):
    import checks
    monkeypatch.setattr(checks.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    assert checks.available_cores() == 8
    assert checks.default_threads() == 8
    assert checks.default_threads(workers=2) == 6
    assert checks.default_threads(workers=2, processes=4) == 1  # 2 cores a rank, 2 workers
    assert checks.default_threads(workers=16) == 1
    monkeypatch.setattr(checks.os, "sched_getaffinity", lambda pid: {3})  # taskset -c 3
    assert checks.default_threads() == 1


def test_entry_points_let_waiting_threads_sleep():
    """Set before torch loads OpenMP; a user's own setting is kept."""
    import subprocess
    import sys

    from helpers import ROOT
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for mod in ("train", "test", "inference", "serve"):
        code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import {mod}, os; " \
               "print(os.environ['OMP_WAIT_POLICY'])"
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.stdout.strip() == "PASSIVE", (mod, out.stderr[-300:])
    out = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
                          "import train, os; print(os.environ['OMP_WAIT_POLICY'])"],
                         env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "ACTIVE"


def test_train_threads_flag(monkeypatch):
    import torch

    from trainer.train import set_training_threads
    before = torch.get_num_threads()
    try:
        assert set_training_threads({"data": {"num_workers": 2}}, 1) == 1
        assert torch.get_num_threads() == 1
        import checks
        monkeypatch.setattr(checks.os, "sched_getaffinity", lambda pid: set(range(6)))
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        assert set_training_threads({"data": {"num_workers": 1}}) == 2  # 6 cores / 2 ranks - 1
    finally:
        torch.set_num_threads(before)
