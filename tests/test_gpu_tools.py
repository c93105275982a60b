"""The GPU measurement tools' own logic, on the CPU (their figures need a GPU: README, Benchmarks).
"""
import math

import pytest

from benchmarks import gpu
from tools import gpu_check


def test_unknown_bench_parts_are_one_line_and_exit_2(capsys):
    assert gpu_check.main(["--device", "cpu", "--no-checks", "--bench",
                           "--bench-parts", "inference,warp"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --bench-parts: unknown warp (known: {', '.join(gpu.PARTS)})"]
    with pytest.raises(ValueError, match="unknown bench parts"):
        gpu.bench("cpu", 32, 2, 1, parts=("train", "warp"))


def test_bench_runs_only_the_parts_asked_for(capsys, monkeypatch):
    seen = []
    monkeypatch.setattr(gpu, "end_to_end", lambda *a, **k: seen.append("e2e"))
    best = gpu.bench("cpu", 32, 2, 1, parts=("profile", "e2e"))
    out = capsys.readouterr().out
    assert "where a RECCE training step goes" in out and seen == ["e2e"]
    assert "training throughput" not in out and "inference throughput" not in out
    assert best["Recce"][1:] == ("fp32", True) and math.isnan(best["Recce"][0])


def test_module_profile_parts_fit_in_the_forward():
    result = gpu.module_profile("cpu", size=32, batch=2, steps=1)
    parts = ("encoder (Xception blocks)", "decoder", "graph reasoning", "guided attention")
    assert all(result[p] > 0 for p in parts)
    assert sum(result[p] for p in parts) <= result["forward (whole)"] * 1.001
    assert result["backward + Adam step"] > 0


def test_the_sync_check_says_it_needs_cuda(capsys):
    gpu_check.RESULTS.clear()
    gpu_check.check_no_host_sync(None, None, "cpu", 32)
    assert gpu_check.RESULTS == ["SKIP"]
    assert "needs CUDA" in capsys.readouterr().out
