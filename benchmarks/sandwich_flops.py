"""How much work one sandwich step is, against training one network: forward FLOPs at the space's input size.

``scripts/gpu_check.sh`` reports images/s of the sandwich step (largest, smallest and ``--num-random`` random
subnets) next to timm's ``efficientformer_l1`` trained alone. This counts what each does per image
(``torch.utils.flop_counter``, forward at batch 1, on the CPU) over the subnets of the first ``--steps``
sandwich steps, and with ``--gpu-check FILE`` (a ``gpu_check.json``) turns the measured images/s into the
sandwich's FLOP rate relative to the single network's: near 1 means the elastic supernet runs its FLOPs as fast
as a plain network; well under 1 would be overhead of slicing.

    python benchmarks/sandwich_flops.py --gpu-check runs/gpu/session1/gpu-check_gpu_check.json
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode


def forward_gflops(model: torch.nn.Module, img: int) -> float:
    x = torch.randn(1, 3, img, img)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.eval()(x)
    return fc.get_total_flops() / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="default")
    ap.add_argument("--steps", type=int, default=10, help="sandwich steps whose subnets are counted (default 10)")
    ap.add_argument("--num-random", type=int, default=2, help="random subnets per step (gpu_check's: 2)")
    ap.add_argument("--gpu-check", type=Path, default=None, help="a gpu_check.json to relate the FLOPs to")
    args = ap.parse_args()
    import timm

    from slimformer.supernet import build_model, get_space
    from slimformer.train import subnets_for_step

    sp = get_space(args.space)
    ref = forward_gflops(timm.create_model("efficientformer_l1", num_classes=1000), sp.img_size)
    print(f"timm efficientformer_l1: {ref:.2f} GFLOPs per image (forward, {sp.img_size} px)")
    per_step = []
    for i in range(args.steps):
        fl = [forward_gflops(build_model(c), sp.img_size) for c in subnets_for_step(sp, 0, i, args.num_random)]
        per_step.append(sum(fl))
        print(f"sandwich step {i}: subnets {', '.join(f'{f:.2f}' for f in fl)} GFLOPs, sum {sum(fl):.2f}")
    work = statistics.mean(per_step)
    print(f"one sandwich step is {work / ref:.2f}x the forward work of L1 per image (mean of {args.steps} steps); "
          f"at equal FLOP rate its images/s would be {ref / work:.3f}x L1's")
    if args.gpu_check:
        r = json.loads(args.gpu_check.read_text(encoding="utf-8"))
        measured = r["sandwich"]["images_per_s"] / r["single"]["images_per_s"]
        rate = measured * work / ref
        print(f"{r['device']}: measured images/s ratio {measured:.3f}, so the sandwich runs its FLOPs at "
              f"{rate:.2f}x the rate of {r['single']['model']} alone "
              f"({3 * work * r['sandwich']['images_per_s'] / 1e3:.1f} vs "
              f"{3 * ref * r['single']['images_per_s'] / 1e3:.1f} TFLOP/s, counting backward as 2x forward)")


if __name__ == "__main__":
    main()
