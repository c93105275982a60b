"""``tools/benchmark.py model``: a training step (forward, losses, backward, Adam) and an eval
forward of RECCE against timm's bare Xception, and against RECCE the original's way (NCHW, the
per-position loop)."""
import statistics
import time
import types

import torch

from model.blocks import loop_reasoning_forward

# the rows: (figure key, printed name)
MODELS = (("xception", "legacy_xception"), ("recce", "Recce"),
          ("recce_original", "Recce, original-style (NCHW, loop)"))


def _xception_step(x, y):
    import timm
    net = timm.create_model("legacy_xception", num_classes=1)
    opt = torch.optim.Adam(net.parameters(), lr=2e-4)

    def step():
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x)[:, 0], y.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net, step


def _recce_step(x, y, original=False):
    from model import Recce, RecceLoss
    net = Recce(num_classes=1, channels_last=not original)
    if original:  # NCHW and the per-position loop, as the original release ran
        net.reasoning.forward = types.MethodType(loop_reasoning_forward, net.reasoning)
    crit = RecceLoss()
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=2e-4)

    def step():
        loss = crit(net(x, return_aux=True), x, y)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net, step


def bench_model(batch=8, size=299, repeats=5, skip_original=False):
    """Prints the table; returns its figures: ``<model>_train_s``, ``<model>_train_x`` (ratio to
    Xception), ``<model>_eval_s``, ``<model>_eval_x``, and the original's way over RECCE's."""
    torch.manual_seed(0)
    x = torch.rand(batch, 3, size, size) * 2 - 1
    y = torch.arange(batch) % 2
    setups = {"xception": lambda: _xception_step(x, y), "recce": lambda: _recce_step(x, y)}
    if not skip_original:
        setups["recce_original"] = lambda: _recce_step(x, y, original=True)
    built = [(key, *setup()) for key, setup in setups.items()]
    # Interleaved: every repeat times each model once, so that drift on a shared machine hits
    # all of them alike.
    train_t = {key: [] for key, _, _ in built}
    eval_t = {key: [] for key, _, _ in built}
    for r in range(repeats + 1):
        for key, net, step in built:
            net.train()
            start = time.perf_counter()
            step()
            t_train = time.perf_counter() - start
            net.eval()
            with torch.no_grad():
                start = time.perf_counter()
                net(x)
                t_eval = time.perf_counter() - start
            if r:  # the first round is warm-up
                train_t[key].append(t_train)
                eval_t[key].append(t_eval)
    results = {key: (statistics.median(train_t[key]), statistics.median(eval_t[key]))
               for key, _, _ in built}
    base = results["xception"]
    print(f"\nbatch {batch}, {size} px, {torch.get_num_threads()} CPU threads, "
          f"torch {torch.__version__}, median of {repeats}")
    print("| model | train step (s) | x Xception | eval forward (s) | x Xception |")
    print("| --- | --- | --- | --- | --- |")
    figures = {}
    for key, name in MODELS:
        if key not in results:
            continue
        tt, te = results[key]
        figures.update({f"{key}_train_s": round(tt, 3), f"{key}_train_x": round(tt / base[0], 2),
                        f"{key}_eval_s": round(te, 3), f"{key}_eval_x": round(te / base[1], 2)})
        print(f"| {name} | {tt:.3f} | {tt / base[0]:.2f} | {te:.3f} | {te / base[1]:.2f} |")
    orig = results.get("recce_original")
    if orig:
        faster = (orig[0] / results["recce"][0], orig[1] / results["recce"][1])
        figures.update(original_over_recce_train=round(faster[0], 2),
                       original_over_recce_eval=round(faster[1], 2))
        print(f"\nRecce vs the original-style RECCE: training step {faster[0]:.2f}x "
              f"faster, eval forward {faster[1]:.2f}x faster")
    return figures
