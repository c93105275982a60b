"""``tools/benchmark.py contention``: the demo's training alone and beside a second busy process
(a scoring loop: RECCE forward passes at torch's default threads), under the training defaults
(threads from the cores it may use less its loader workers, waiting threads asleep) and under the
settings before them (one intra-op thread per core, threads spinning while they wait). The
training rate is the images/s of its logging windows after the first; the target is a busy/quiet
ratio of at least 0.4 (the fair share of one of two busy processes is 0.5)."""
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# a second user's process: scoring crops as fast as it can, with torch's default threads
COMPETITOR = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from model import Recce
model = Recce().eval()
x = torch.rand(8, 3, 64, 64)
with torch.no_grad():
    while True:
        model(x)
"""


def train_rate(run_root, steps, extra_env, extra_args):
    """images/s of the demo's training over its logging windows after the first (a window of 25
    steps), from the trainer's own log lines."""
    env = {**os.environ, **extra_env}
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--opt", f"train_cfg.num_steps={steps}",
           "--opt", "train_cfg.log_steps=25", "--opt", f"train_cfg.val_steps={steps * 10}",
           "--opt", f"config.ckpt_fold={run_root}",
           "--opt", f"config.id=c{int(time.time() * 1000)}"] + extra_args
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode:
        raise SystemExit(f"training failed: {out.stderr[-600:]}")
    log = out.stdout + out.stderr
    rates = [float(m) for m in re.findall(r"step \d+/\d+  loss .* (\d+(?:\.\d+)?) img/s", log)]
    if len(rates) < 2:
        raise SystemExit(f"no rate in the training log: {log[-600:]}")
    return sum(rates[1:]) / len(rates[1:])


def bench_contention(steps=100):
    """Prints the table; returns its figures: ``<setting>_quiet``, ``<setting>_busy`` (images/s)
    and ``<setting>_ratio`` for the settings defaults and before."""
    settings = [
        ("defaults", "defaults (threads by cores less loader workers, waiting threads asleep)",
         {}, []),
        # an empty OMP_WAIT_POLICY is OpenMP's own default (spin, then sleep), as before
        ("before", "one thread per core, OpenMP's default waiting", {"OMP_WAIT_POLICY": ""},
         ["--threads", str(os.cpu_count() or 1)]),
    ]
    print(f"demo training, {steps} steps, {os.cpu_count()} cores "
          f"(affinity {len(os.sched_getaffinity(0))}); rate = mean images/s after the first "
          "25-step window")
    print(f"{'setting':<72} {'quiet':>7} {'busy':>7} {'ratio':>6}")
    figures = {}
    with tempfile.TemporaryDirectory() as runs:
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_demo_dataset.py")],
                       cwd=ROOT, capture_output=True, timeout=600)
        for key, name, env, extra in settings:
            quiet = train_rate(runs, steps, env, extra)
            rival = subprocess.Popen([sys.executable, "-c", COMPETITOR, ROOT],
                                     env={**os.environ, "OMP_WAIT_POLICY": ""},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(3)  # the rival at work before the training starts
                busy = train_rate(runs, steps, env, extra)
            finally:
                rival.kill()
                rival.wait()
            figures.update({f"{key}_quiet": round(quiet, 1), f"{key}_busy": round(busy, 1),
                            f"{key}_ratio": round(busy / quiet, 2)})
            print(f"{name:<72} {quiet:7.1f} {busy:7.1f} {busy / quiet:6.2f}", flush=True)
    return figures
