"""The GPU training path, checked: AMP + channels_last sandwich steps, throughput next to timm, peak memory, resume.

On a CUDA device (``--device cuda``, the default when one is present):

1. trains the **default space** at 224 px for ``--steps`` sandwich updates (largest, smallest, 2 random
   subnets; in-place distillation) on synthetic ImageNet-shaped data (random images, 1000 classes) with
   AMP (float16 + GradScaler) and channels_last, and reports images/s of the sandwich step (median after
   ``--warmup`` steps), peak GPU memory and that every loss stayed finite;
2. trains timm's ``efficientformer_l1`` alone with the same optimiser, AMP and channels_last, images/s and
   peak memory;
3. checks resume through ``slimformer train`` itself (``train_supernet``; tiny space, built-in data, on
   the same device): 2 epochs stopped after 1 and resumed must end where an uninterrupted run ends.

Without CUDA it runs a tiny **CPU fallback** of the same three steps (tiny space at 32 px, a few steps,
the extracted largest subnet as the single-network reference since timm's L1 needs 224 px) so the script
itself stays tested; its figures are not GPU figures. Writes ``gpu_check.json`` and ``report.md`` to
``--out`` and prints a summary.

    bash scripts/gpu_check.sh [OUT_DIR] [--steps 300 --batch 128]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None


def synthetic_batches(n: int, batch: int, img: int, classes: int, device: torch.device, channels_last: bool):
    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return [(torch.randn(batch, 3, img, img, generator=g).to(device).contiguous(memory_format=fmt),
             torch.randint(0, classes, (batch,), generator=g).to(device)) for _ in range(n)]


def timed_loop(step_fn, batches, steps: int, warmup: int, device: torch.device) -> dict:
    """Run ``steps`` updates; median seconds per update after ``warmup``, and every loss."""
    times, losses = [], []
    for i in range(steps):
        x, y = batches[i % len(batches)]
        _sync(device)
        t0 = time.perf_counter()
        losses.append(step_fn(i, x, y))
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"median_s": med, "images_per_s": len(batches[0][0]) / med, "steps": steps, "timed": len(times),
            "finite": all(math.isfinite(v) for v in losses), "first_loss": losses[0], "last_loss": losses[-1]}


def sandwich_run(space, cfg, batches, args, device) -> dict:
    from slimformer.supernet import Supernet
    from slimformer.train import Optim, Targets, sandwich_step, subnets_for_step

    torch.manual_seed(0)
    model = Supernet(space).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.distilled_training = True
    model.train()
    optim = Optim(model, cfg, updates_per_epoch=args.steps, device=device)
    targets = Targets(cfg, space.num_classes)
    _peak_reset(device)

    def step(i, x, y):
        x, t = targets(x, y)
        out = sandwich_step(model, optim, x, t, subnets_for_step(space, 0, i, cfg.num_random),
                            kd_weight=cfg.kd_weight, step=i)
        return out["loss"]

    res = timed_loop(step, batches, args.steps, args.warmup, device)
    res.update(peak_gib=_peak_gib(device), amp=optim.amp, grad_scale=float(optim.scaler.get_scale()) if optim.amp else None)
    return res


def single_run(net, cfg, batches, args, device, classes: int) -> dict:
    from slimformer.train import Optim, Targets, finetune_step

    net = net.to(device)
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if hasattr(net, "set_distilled_training"):
        net.set_distilled_training(True)
    net.train()
    optim = Optim(net, cfg, updates_per_epoch=args.steps, device=device)
    targets = Targets(cfg, classes)
    _peak_reset(device)

    def step(i, x, y):
        x, t = targets(x, y)
        return finetune_step(net, None, optim, x, t, kd_weight=0.0, step=i)["loss"]

    res = timed_loop(step, batches, args.steps, args.warmup, device)
    res["peak_gib"] = _peak_gib(device)
    return res


def resume_check(device: torch.device, work: Path) -> dict:
    """``train_supernet`` for 2 epochs in one go vs stopped after 1 and resumed: same steps, weights, metrics."""
    from slimformer.supernet import load_supernet
    from slimformer.train import TrainConfig, train_supernet

    kw = {"space": "tiny", "data": "builtin", "epochs": 2, "steps_per_epoch": 3, "batch_size": 16, "train_size": 96,
          "val_size": 32, "eval_batches": 1, "device": device.type, "quiet": True, "warmup_epochs": 0.5}
    train_supernet(TrainConfig(**kw), work / "straight")
    train_supernet(TrainConfig(**kw, stop_after=1), work / "resumed")
    half = load_supernet(work / "resumed" / "last.pt").raw["train_state"]["step"]
    train_supernet(TrainConfig(**{**kw, "resume": str(work / "resumed")}), work / "resumed")
    a, b = (load_supernet(work / d / "last.pt") for d in ("straight", "resumed"))
    diff = max(float((a.model.state_dict()[k].float() - v.float()).abs().max()) for k, v in b.model.state_dict().items())
    steps = (a.raw["train_state"]["step"], b.raw["train_state"]["step"])
    return {"steps_after_stop": half, "steps": list(steps), "max_abs_weight_diff": diff,
            "ok": steps[0] == steps[1] == 6 and half == 3 and diff <= (1e-5 if device.type == "cpu" else 1e-2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/gpu-check")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present, else the CPU fallback), cuda, cpu")
    ap.add_argument("--steps", type=int, default=None, help="updates per model (default 300 on CUDA, 4 on CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed first updates (default 20 on CUDA, 1 on CPU)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default 128 on CUDA, 8 on CPU)")
    ap.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but this machine has no CUDA device")
    gpu = device.type == "cuda"
    args.steps = args.steps or (300 if gpu else 4)
    args.warmup = args.warmup if args.warmup is not None else (20 if gpu else 1)
    args.batch = args.batch or (128 if gpu else 8)
    if not gpu:
        torch.set_num_threads(1)
    from slimformer._io import atomic_write_json, atomic_write_text
    from slimformer.supernet import get_space
    from slimformer.train import TrainConfig

    space = get_space("default" if gpu else "tiny")
    cfg = TrainConfig(space=space.name, epochs=1, warmup_epochs=0.1, amp=True, num_random=2)
    batches = synthetic_batches(4, args.batch, space.img_size, space.num_classes, device, args.channels_last)
    name = torch.cuda.get_device_name(device) if gpu else "CPU (fallback: not a GPU figure)"
    print(f"{name}: {space.name} space at {space.img_size} px, batch {args.batch}, {args.steps} steps "
          f"({args.warmup} untimed), AMP {'on' if gpu else 'off (CPU)'}, channels_last {args.channels_last}", flush=True)
    res = {"device": name, "cuda": gpu, "space": space.name, "img_size": space.img_size, "batch": args.batch,
           "steps": args.steps, "channels_last": args.channels_last, "torch": torch.__version__}
    res["sandwich"] = sandwich_run(space, cfg, batches, args, device)
    print(f"sandwich step (4 subnets): {res['sandwich']['images_per_s']:.1f} images/s, peak "
          f"{res['sandwich']['peak_gib'] or 0:.2f} GiB, losses finite: {res['sandwich']['finite']}", flush=True)
    if gpu:
        import timm

        ref, ref_name = timm.create_model("efficientformer_l1", num_classes=1000), "timm efficientformer_l1"
    else:
        from slimformer.supernet import Supernet

        ref, ref_name = Supernet(space).extract_subnet(space.largest()), "extracted largest subnet (tiny)"
    res["single"] = {"model": ref_name, **single_run(ref, cfg, batches, args, device, space.num_classes)}
    res["sandwich_over_single"] = res["sandwich"]["images_per_s"] / res["single"]["images_per_s"]
    print(f"{ref_name} alone: {res['single']['images_per_s']:.1f} images/s, peak {res['single']['peak_gib'] or 0:.2f} "
          f"GiB; sandwich/single throughput {res['sandwich_over_single']:.3f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        res["resume"] = resume_check(device, Path(tmp))
    print(f"resume through slimformer train: {'works' if res['resume']['ok'] else 'FAILED'} "
          f"(steps {res['resume']['steps']}, max |weight diff| {res['resume']['max_abs_weight_diff']:.2e})")
    out = Path(args.out)
    atomic_write_json(out / "gpu_check.json", res)
    atomic_write_text(out / "report.md", "# GPU check\n\n```\n" + json.dumps(res, indent=2) + "\n```\n")
    ok = res["sandwich"]["finite"] and res["single"]["finite"] and res["resume"]["ok"]
    print(f"{'all checks passed' if ok else 'SOME CHECKS FAILED'}; wrote {out}/gpu_check.json")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
