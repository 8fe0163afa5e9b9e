"""Training throughput: one supernet update (sandwich rule) vs one update of the extracted largest subnet.

Same batch of built-in images, same optimiser set-up (timm AdamW, cosine), CPU, ``--threads`` torch threads.
The sandwich step runs the largest, the smallest and ``--num-random`` random subnets (plus one Gumbel pass
with ``--gumbel``), so its cost is several forward/backward passes; the ratio says what weight sharing costs
per update compared with training one network. Prints medians over ``--repeats`` timed steps after warm-up.
On a machine shared with other jobs the figures are noisy.

    python benchmarks/train_throughput.py [--space tiny] [--batch 64] [--repeats 10] [--gumbel]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="tiny")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--num-random", type=int, default=2)
    ap.add_argument("--gumbel", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from slimformer.data import BuiltinShapes
    from slimformer.supernet import Supernet, get_space
    from slimformer.train import (
        ArchParams,
        Optim,
        Targets,
        TrainConfig,
        finetune_step,
        sandwich_step,
        subnets_for_step,
    )

    sp = get_space(args.space)
    ds = BuiltinShapes(img_size=sp.img_size, length=args.batch, seed=0)
    x = torch.stack([ds[i][0] for i in range(args.batch)])
    y = torch.tensor([ds[i][1] for i in range(args.batch)])
    cfg = TrainConfig(space=args.space, epochs=1, warmup_epochs=0, num_random=args.num_random)
    cpu = torch.device("cpu")
    _, target = Targets(cfg, sp.num_classes)(x, y)

    torch.manual_seed(0)
    sup = Supernet(sp).train()
    sup.distilled_training = True
    arch = ArchParams(sp) if args.gumbel else None
    aopt = torch.optim.Adam(arch.parameters(), lr=cfg.alpha_lr) if arch is not None else None
    sup_opt = Optim(sup, cfg, updates_per_epoch=1000, device=cpu, extra=aopt)
    net = sup.extract_subnet(sp.largest()).train()
    net.set_distilled_training(True)
    net_opt = Optim(net, cfg, updates_per_epoch=1000, device=cpu)

    def sandwich(i):
        sandwich_step(sup, sup_opt, x, target, subnets_for_step(sp, 0, i, args.num_random), kd_weight=cfg.kd_weight,
                      arch=arch, tau=1.0, step=i)

    def single(i):
        finetune_step(net, None, net_opt, x, target, kd_weight=0.0, step=i)

    res = {}
    for name, fn in (("supernet sandwich step", sandwich), ("extracted largest subnet", single)):
        for i in range(args.warmup):
            fn(i)
        times = []
        for i in range(args.repeats):
            t0 = time.perf_counter()
            fn(args.warmup + i)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        res[name] = args.batch / med
        print(f"{name:<26} {med * 1e3:8.1f} ms/step  {res[name]:8.1f} images/s  "
              f"(median of {args.repeats}, min {min(times) * 1e3:.1f} ms, max {max(times) * 1e3:.1f} ms)")
    passes = 2 + args.num_random + (1 if args.gumbel else 0)
    ratio = res["supernet sandwich step"] / res["extracted largest subnet"]
    print(f"space {sp.name} {sp.img_size}px, batch {args.batch}, {args.threads} thread(s), sandwich of {passes} passes"
          f"{' incl. Gumbel' if args.gumbel else ''}: supernet/single throughput ratio {ratio:.3f} "
          f"(one sandwich update costs {1 / ratio:.2f}x a single-network update)")


if __name__ == "__main__":
    main()
