"""Throughput tables for ``tools/gpu_check.py --bench``: training images/s and peak memory for
timm Xception and RECCE in fp32, fp16 and bf16, NCHW and channels-last, with torch.compile for the
best of each (CUDA only), and the original's way (fp16 autocast, NCHW, the per-position loop);
inference images/s by batch size. Ratios within one run are what to compare."""
import time
import types

import torch

DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_rate(make, device, size, batch, steps, amp, channels_last, compile_=False):
    from loss import build_loss
    model, loss_name = make(channels_last)
    model = model.to(device).train()
    if compile_:
        model = torch.compile(model)
    crit = build_loss(loss_name, {}, 1)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0 ** 10, enabled=amp == "fp16"
                                  and device.type == "cuda")
    x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    y = (torch.arange(batch, device=device) % 2)
    dtype = DTYPES[amp]

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(x, return_aux=True)
        loss = crit({k: v.float() for k, v in out.items()}, x, y)["total"]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    for _ in range(3 if not compile_ else 5):  # warm-up (and compilation)
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    rate = batch * steps / (time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else float("nan")
    return rate, peak


def _makers():
    from model import Recce, Xception
    from tools.benchmark import _loop_reasoning_forward

    def xception(cl):
        return Xception(channels_last=cl), "ClassificationLoss"

    def recce(cl):
        return Recce(channels_last=cl), "RecceLoss"

    def original(cl):
        net = Recce(channels_last=False)
        net.reasoning.forward = types.MethodType(_loop_reasoning_forward, net.reasoning)
        return net, "RecceLoss"
    return {"Xception": xception, "Recce": recce, "original": original}


def bench(device_name, size=299, batch=32, steps=10):
    device = torch.device(device_name)
    makers = _makers()
    rows = []
    print(f"\ntraining throughput: batch {batch}, {size} px, {steps} timed steps, {device_name}")
    print("| model | precision | layout | compile | images/s | peak memory (MB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    best = {}
    for name in ("Xception", "Recce"):
        for amp in ("fp32", "fp16", "bf16"):
            if device.type == "cpu" and amp == "fp16":
                continue  # no fp16 training on the CPU
            for cl in (False, True):
                rate, peak = _train_rate(makers[name], device, size, batch, steps, amp, cl)
                layout = "channels-last" if cl else "NCHW"
                print(f"| {name} | {amp} | {layout} | no | {rate:.1f} | {peak:.0f} |", flush=True)
                rows.append((name, amp, layout, False, rate))
                if rate > best.get(name, (0,))[0]:
                    best[name] = (rate, amp, cl)
        if device.type == "cuda":
            _, amp, cl = best[name]
            rate, peak = _train_rate(makers[name], device, size, batch, steps, amp, cl, True)
            print(f"| {name} | {amp} | {'channels-last' if cl else 'NCHW'} | yes | {rate:.1f} | "
                  f"{peak:.0f} |", flush=True)
            if rate > best[name][0]:
                best[name] = (rate, amp, cl)
    amp = "fp16" if device.type == "cuda" else "fp32"
    rate, peak = _train_rate(makers["original"], device, size, batch, steps, amp, False)
    print(f"| Recce, the original's way (per-position loop) | {amp} | NCHW | no | {rate:.1f} | "
          f"{peak:.0f} |")
    print(f"\nRECCE's best / Xception's best: {best['Recce'][0] / best['Xception'][0]:.2f} "
          f"(target >= 0.75); RECCE's best / the original's way: {best['Recce'][0] / rate:.2f} "
          "(target >= 3)")
    print(f"\ninference throughput (RECCE, eval, {size} px, {device_name})")
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
                for _ in range(3):
                    model(x)
                _sync(device)
                start = time.perf_counter()
                n = max(2, steps)
                for _ in range(n):
                    model(x)
                _sync(device)
            print(f"| {b} | {amp} | {b * n / (time.perf_counter() - start):.1f} |", flush=True)
    return rows
