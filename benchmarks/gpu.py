"""``tools/benchmark.py gpu`` and ``tools/gpu_check.py --bench``: training images/s and peak
memory for timm Xception and RECCE in fp32, fp16 and bf16, NCHW and channels-last, with
torch.compile for the best of each (CUDA only), and the original's way (fp16 autocast, NCHW, the
per-position loop); inference images/s by batch size; where a RECCE step goes
(``module_profile``); the trainer end to end (``end_to_end``); and, last, each model's whole
training step replayed as one CUDA graph (``graphed_steps``: is the step launch-bound?). Ratios
within one run are what to compare."""
import time
import types

import torch

DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, images, steps, warmup=3):
    """(images/s, peak MB on a GPU else NaN) of ``steps`` calls of ``fn`` after ``warmup`` calls;
    each call handles ``images`` images."""
    for _ in range(warmup):
        fn()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    rate = images * steps / (time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda"
            else float("nan"))
    return rate, peak


def _training(make, device, size, batch, channels_last):
    """A model in training mode on ``device``, its loss, and a fixed batch (x in [-1, 1], labels
    alternating real and fake)."""
    from loss import build_loss
    model, loss_name = make(channels_last)
    x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    y = torch.arange(batch, device=device) % 2
    return model.to(device).train(), build_loss(loss_name, {}, 1), x, y


def _train_rate(make, device, size, batch, steps, amp, channels_last, compile_=False):
    model, crit, x, y = _training(make, device, size, batch, channels_last)
    if compile_:
        model = torch.compile(model)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-4,
                           fused=device.type == "cuda")  # as the trainer on a GPU
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0 ** 10, enabled=amp == "fp16"
                                  and device.type == "cuda")
    dtype = DTYPES[amp]

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(x, return_aux=True)
        loss = crit({k: v.float() for k, v in out.items()}, x, y)["total"]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return _timed(step, device, batch, steps, warmup=5 if compile_ else 3)  # (and compilation)


def _graphed_train_rate(make, device, size, batch, steps, amp, channels_last):
    """The whole training step (forward, losses, backward, Adam) captured once as a CUDA graph and
    replayed: no launch overhead at all. Against the eager rate it says how much of a step is the
    host launching kernels rather than the GPU running them. bf16 or fp32 only (the fp16 grad
    scaler's bookkeeping is not captured). Returns (images/s, peak MB) or raises."""
    model, crit, x, y = _training(make, device, size, batch, channels_last)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-4,
                           capturable=True)
    dtype = DTYPES[amp]

    def step():
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None,
                            cache_enabled=False):  # no cast cache across a capture
            out = model(x, return_aux=True)
        crit({k: v.float() for k, v in out.items()}, x, y)["total"].backward()
        opt.step()

    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)  # the captured backward allocates .grad in the graph's pool
    with torch.cuda.graph(graph):
        step()
    return _timed(graph.replay, device, batch, steps)


def _images_per_s(forward, x, device, n):
    """Images per second of ``forward(x)`` over ``n`` calls after three warm-up calls."""
    return _timed(lambda: forward(x), device, len(x), n)[0]


def _makers():
    from model import Recce, Xception
    from model.blocks import loop_reasoning_forward

    def xception(cl):
        return Xception(channels_last=cl), "ClassificationLoss"

    def recce(cl):
        return Recce(channels_last=cl), "RecceLoss"

    def original(cl):
        net = Recce(channels_last=False)
        net.reasoning.forward = types.MethodType(loop_reasoning_forward, net.reasoning)
        return net, "RecceLoss"
    return {"Xception": xception, "Recce": recce, "original": original}


PARTS = ("train", "inference", "profile", "e2e", "graphs")


def bench(device_name, size=299, batch=32, steps=10, parts=PARTS):
    """The tables of ``parts`` (all by default, in this order; with little GPU time at hand they
    can be split over two calls). Without "train", the profile and the graphs take bf16
    channels-last (fp32 on the CPU) as each model's best."""
    device = torch.device(device_name)
    makers = _makers()
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown bench parts {sorted(unknown)} (known: {', '.join(PARTS)})")
    default = "bf16" if device.type == "cuda" else "fp32"
    best = {name: (float("nan"), default, True) for name in ("Xception", "Recce")}
    if "train" in parts:
        best = train_table(device, makers, size, batch, steps)
    if "inference" in parts:
        inference_table(device, size, steps)
    if "profile" in parts:
        module_profile(device_name, size, batch, best["Recce"][1], steps=max(2, steps // 2))
    if "e2e" in parts:
        end_to_end(device_name, size, batch, steps=max(4, steps),
                   workers=(4, 8, 14) if device.type == "cuda" else (1, 2))
    if "graphs" in parts and device.type == "cuda":  # last: a failed capture costs nothing else
        graphed_steps(device, makers, best, size, batch, steps)
    return best


def train_table(device, makers, size, batch, steps):
    """Training images/s and peak memory of every precision and layout; returns each model's
    best as {name: (images/s, precision, channels_last)}."""
    print(f"\ntraining throughput: batch {batch}, {size} px, {steps} timed steps, {device}")
    print("| model | precision | layout | compile | images/s | peak memory (MB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    best, tuned = {}, {}
    for name in ("Xception", "Recce"):
        for amp in ("fp32", "fp16", "bf16"):
            if device.type == "cpu" and amp == "fp16":
                continue  # no fp16 training on the CPU
            for cl in (False, True):
                rate, peak = _train_rate(makers[name], device, size, batch, steps, amp, cl)
                layout = "channels-last" if cl else "NCHW"
                print(f"| {name} | {amp} | {layout} | no | {rate:.1f} | {peak:.0f} |", flush=True)
                if rate > best.get(name, (0,))[0]:
                    best[name] = (rate, amp, cl)
        if device.type == "cuda":
            _, amp, cl = best[name]
            rate, peak = _train_rate(makers[name], device, size, batch, steps, amp, cl, True)
            print(f"| {name} | {amp} | {'channels-last' if cl else 'NCHW'} | yes | {rate:.1f} | "
                  f"{peak:.0f} |", flush=True)
            if rate > best[name][0]:
                best[name] = (rate, amp, cl)
            # cuDNN's autotuner (the trainer leaves it off: its choice varies from run to run)
            torch.backends.cudnn.benchmark = True
            try:
                rate, peak = _train_rate(makers[name], device, size, batch, steps, amp, cl)
            finally:
                torch.backends.cudnn.benchmark = False
            print(f"| {name} | {amp} | {'channels-last' if cl else 'NCHW'} | no, "
                  f"cudnn.benchmark | {rate:.1f} | {peak:.0f} |", flush=True)
            tuned[name] = rate
    amp = "fp16" if device.type == "cuda" else "fp32"
    rate, peak = _train_rate(makers["original"], device, size, batch, steps, amp, False)
    print(f"| Recce, the original's way (per-position loop) | {amp} | NCHW | no | {rate:.1f} | "
          f"{peak:.0f} |")
    print(f"\nRECCE's best / Xception's best: {best['Recce'][0] / best['Xception'][0]:.2f} "
          f"(target >= 0.75); RECCE's best / the original's way: {best['Recce'][0] / rate:.2f} "
          "(target >= 3)")
    if tuned:
        print(f"with cudnn.benchmark: RECCE / Xception {tuned['Recce'] / tuned['Xception']:.2f}")
    return best


def inference_table(device, size, steps):
    """RECCE's eval images/s by batch size and precision; on a GPU also the CUDA-graph replay
    that inference.py uses (batch 1: launch-bound when eager)."""
    print(f"\ninference throughput (RECCE, eval, {size} px, {device})")
    print("| batch | precision | images/s |")
    print("| --- | --- | --- |")
    from model import Recce
    model = Recce().to(device).eval()
    for b in (1, 8, 32, 128) if device.type == "cuda" else (1, 4):
        x = torch.rand(b, 3, size, size, device=device) * 2 - 1
        for amp in ("fp32", "fp16") if device.type == "cuda" else ("fp32",):
            dtype = DTYPES[amp]
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32,
                                                        enabled=dtype is not None):
                rate = _images_per_s(model, x, device, max(2, steps))
            print(f"| {b} | {amp} | {rate:.1f} |", flush=True)
    if device.type == "cuda":  # inference.py's default on a GPU: the forward as CUDA graphs
        from model.graphs import GraphedScorer
        graphed = GraphedScorer(model)
        for b in (1, 8):
            x = torch.rand(b, 3, size, size, device=device) * 2 - 1
            rate = _images_per_s(graphed, x, device, max(20, steps))
            note = "CUDA graphs" if not graphed.failed else f"eager ({graphed.failed})"
            print(f"| {b} | fp32, {note} | {rate:.1f} |", flush=True)


def graphed_steps(device, makers, best, size, batch, steps):
    """Each model's best eager setting against its whole training step as one CUDA graph: eager /
    graphed near 1 means the GPU was kept busy; well under 1, the step is launch-bound (the host
    issuing kernels, not the GPU running them, sets the pace)."""
    print(f"\nthe whole training step as one CUDA graph (no launch overhead): batch {batch}, "
          f"{size} px")
    print("| model | precision | layout | eager images/s | graphed images/s | eager / graphed |")
    print("| --- | --- | --- | --- | --- | --- |")
    graphed = {}
    for name in ("Xception", "Recce"):
        eager, amp, cl = best[name]
        amp = "bf16" if amp == "fp16" else amp  # the grad scaler's bookkeeping is not captured
        layout = "channels-last" if cl else "NCHW"
        try:
            rate, _ = _graphed_train_rate(makers[name], device, size, batch, steps, amp, cl)
        except Exception as exc:  # noqa: BLE001 - a diagnostic: say why and go on
            print(f"| {name} | {amp} | {layout} | {eager:.1f} | failed: "
                  f"{' '.join(str(exc).split())[:160]} | |", flush=True)
            continue
        graphed[name] = rate
        print(f"| {name} | {amp} | {layout} | {eager:.1f} | {rate:.1f} | {eager / rate:.2f} |",
              flush=True)
    if len(graphed) == 2:
        print(f"graphed RECCE / graphed Xception: {graphed['Recce'] / graphed['Xception']:.2f}")


def module_profile(device_name, size=299, batch=32, amp="bf16", steps=5):
    """Where a RECCE training step goes, per part (CUDA events on a GPU, a synchronised clock on
    the CPU): the encoder's blocks, the decoder, graph reasoning, guided attention, the head, each
    loss term, and backward with the optimizer step. Returns {part: ms per step}."""
    from loss import classification_loss, flood, metric_loss, reconstruction_loss
    from model import Recce
    device = torch.device(device_name)
    if device.type == "cpu":
        amp = "fp32"
    model = Recce().to(device).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-4,
                           fused=device.type == "cuda")
    dtype = DTYPES[amp]
    x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    y = torch.arange(batch, device=device) % 2
    cuda = device.type == "cuda"

    def stamp():
        if cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def elapsed(a, b):
        return a.elapsed_time(b) if cuda else (b - a) * 1000

    groups = {}
    for name, child in model.named_children():
        if name == "encoder":
            for sub, mod in child.named_children():
                if sub != "fc":
                    groups.setdefault("encoder (Xception blocks)", []).append(mod)
        elif name.startswith("decoder"):
            groups.setdefault("decoder", []).append(child)
        elif name == "reasoning":
            groups["graph reasoning"] = [child]
        elif name == "attention":
            groups["guided attention"] = [child]
    spans = {g: [] for g in groups}
    marks = {}
    handles = []
    for g, mods in groups.items():
        for m in mods:
            handles.append(m.register_forward_pre_hook(
                lambda mod, inp, g=g: marks.__setitem__(id(mod), stamp())))
            handles.append(m.register_forward_hook(
                lambda mod, inp, out, g=g: spans[g].append((marks[id(mod)], stamp()))))
    extra = {k: [] for k in ("forward (whole)", "loss: classification (flooded)",
                             "loss: reconstruction", "loss: metric", "backward + Adam step")}
    for it in range(steps + 2):
        for v in spans.values():
            v.clear()
        t0 = stamp()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(x, return_aux=True)
        t1 = stamp()
        out = {k: v.float() for k, v in out.items()}
        c = flood(classification_loss(out["logits"], y, kind="binary_ce"), 0.04)
        t2 = stamp()
        r = reconstruction_loss(out["recons"], x, y)
        t3 = stamp()
        m = metric_loss(out["corr"], y)
        t4 = stamp()
        opt.zero_grad(set_to_none=True)
        (c + 0.1 * r + 0.1 * m).backward()
        opt.step()
        t5 = stamp()
        if cuda:
            torch.cuda.synchronize(device)
        if it < 2:
            continue  # warm-up
        for k, (a, b) in zip(extra, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5))):
            extra[k].append(elapsed(a, b))
        for g, v in spans.items():
            extra.setdefault(g, []).append(sum(elapsed(a, b) for a, b in v))
    for h in handles:
        h.remove()
    result = {k: sum(v) / len(v) for k, v in extra.items() if v}
    forward = result["forward (whole)"]
    print(f"\nwhere a RECCE training step goes: batch {batch}, {size} px, {amp}, {device_name} "
          f"(ms per step, mean of {steps})")
    print("| part | ms | share of the forward |")
    print("| --- | --- | --- |")
    for k in ("encoder (Xception blocks)", "decoder", "graph reasoning", "guided attention",
              "forward (whole)", "loss: classification (flooded)", "loss: reconstruction",
              "loss: metric", "backward + Adam step"):
        share = f"{100 * result[k] / forward:.0f} %" if k in groups else ""
        print(f"| {k} | {result[k]:.1f} | {share} |", flush=True)
    return result


def end_to_end(device_name, size=299, batch=32, steps=20, workers=(4, 8, 14), images=None):
    """The trainer reading 320 px PNG crops from disk (what tools/extract_faces.py writes), within
    one epoch, against the model alone fed a tensor already on the device, and the loader alone:
    images/s for each number of workers. The ratio end-to-end / model-alone is what the loop and
    the loader cost (target: 0.95 or more with 8 workers)."""
    import os
    import tempfile

    import cv2
    import numpy as np
    import yaml

    from dataset.base import to_input
    from trainer.config import load_config
    from trainer.train import Trainer
    n = images or batch * (steps + 6)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            folder = os.path.join(tmp, "data", "real" if i % 2 else "fake", str(i // 16))
            os.makedirs(folder, exist_ok=True)
            img = cv2.GaussianBlur(rng.integers(0, 255, (320, 320, 3), dtype=np.uint8), (9, 9), 3)
            cv2.imwrite(os.path.join(folder, f"{i}.png"), img)
        tf = [{"name": "Resize", "params": {"height": size, "width": size}},
              {"name": "HorizontalFlip", "params": {"p": 0.5}},
              {"name": "Normalize", "params": {"mean": [0.5] * 3, "std": [0.5] * 3}}]
        with open(os.path.join(tmp, "ds.yml"), "w") as fh:
            yaml.safe_dump({"train_cfg": {"root": os.path.join(tmp, "data"), "log_steps": 10 ** 6,
                                          "val_steps": 10 ** 6, "num_steps": steps + 5,
                                          "transforms": tf}}, fh)
        print(f"\nend to end: the trainer on 320 px PNG crops -> {size} px, batch {batch}, "
              f"{device_name}, images/s after 5 warm-up steps")
        print("| workers | loader alone | trainer (end to end) | model alone "
              "| end to end / model |")
        print("| --- | --- | --- | --- | --- |")
        for w in workers:
            with open(os.path.join(tmp, f"c{w}.yml"), "w") as fh:
                yaml.safe_dump({"model": {"name": "Recce", "pretrained": False},
                                "config": {"debug": True, "device": device_name, "amp": "bf16",
                                           "distribute": {"backend": "gloo"}},
                                "data": {"name": "ImageList", "file": os.path.join(tmp, "ds.yml"),
                                         "train_batch_size": batch, "num_workers": w}}, fh)
            trainer = Trainer(load_config(os.path.join(tmp, f"c{w}.yml")))
            device = trainer.device
            loader = trainer.train_loader
            t, seen = None, 0
            for k, b in enumerate(loader):  # the loader alone
                to_input(b, device)
                if k == 1:
                    _sync(device)
                    t = time.perf_counter()
                elif k > 1:
                    seen += len(b["label"])
            _sync(device)
            loader_rate = seen / (time.perf_counter() - t) if seen else float("nan")
            batches = trainer._batches()
            e2e, _ = _timed(lambda: trainer.train_step(next(batches)), device, batch, steps,
                            warmup=5)
            x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
            fixed = {"image": x, "label": torch.arange(batch) % 2, "bad": []}
            alone, _ = _timed(lambda: trainer.train_step(fixed), device, batch, steps)
            trainer.close()
            print(f"| {w} | {loader_rate:.0f} | {e2e:.0f} | {alone:.0f} | {e2e / alone:.2f} |",
                  flush=True)
