"""``slimformer space show`` and ``slimformer arch show``: look at the search space and one config."""
from __future__ import annotations

import json

from ..supernet import count_macs, count_params, get_arch, get_space


def register(sub) -> None:
    p = sub.add_parser("space", help="inspect a search space")
    s = p.add_subparsers(dest="space_command", metavar="ACTION", required=True)
    show = s.add_parser("show", help="choices, number of subnets, parameter and MAC range")
    show.add_argument("--space", default="default", help="space name (default, tiny) or JSON file")
    show.add_argument("--json", action="store_true", help="print the space as JSON")
    show.set_defaults(func=_space_show)

    p = sub.add_parser("arch", help="inspect an architecture config")
    s = p.add_subparsers(dest="arch_command", metavar="ACTION", required=True)
    show = s.add_parser("show", help="blocks, params and MACs of a preset (l1, l3, l7) or an arch JSON file")
    show.add_argument("arch", help="preset name or JSON file (an arch.json from search works too)")
    show.add_argument("--space", default=None, help="also check membership in this space")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=_arch_show)


def _space_show(args) -> int:
    sp = get_space(args.space)
    if args.json:
        print(json.dumps(sp.to_dict(), indent=2))
        return 0
    lo, hi = sp.smallest(), sp.largest()
    print(f"search space {sp.name!r} (hash {sp.hash}), {sp.img_size}px, {sp.num_classes} classes")
    print(f"  stem widths   : {', '.join(map(str, sp.stem_widths))}")
    for si in range(4):
        ws = sp.stage_widths[si]
        print(f"  stage {si + 1}       : widths {ws[0]}..{ws[-1]} ({len(ws)} choices, step {sp.width_step}), "
              f"{sp.depths[si]} positions, kinds {'/'.join(sp.kinds_at(si))}")
    print(f"  MLP ratios    : {', '.join(f'{r:g}' for r in sp.mlp_ratios)}")
    if sp.mb3d_stages:
        print(f"  MB3D          : heads {sp.heads}, Q/K dim per head {sp.qk_dims}, V dim per head {sp.v_dims}")
    print(f"  subnets       : {sp.num_subnets():.3e}")
    print(f"  params        : {count_params(lo) / 1e6:.2f} M .. {count_params(hi) / 1e6:.2f} M")
    print(f"  MACs          : {count_macs(lo) / 1e6:.1f} M .. {count_macs(hi) / 1e6:.1f} M")
    return 0


def _arch_show(args) -> int:
    cfg = get_arch(args.arch)
    info = {"name": cfg.name, "summary": cfg.summary(), "params": count_params(cfg), "macs": count_macs(cfg),
            "arch": cfg.to_dict()}
    if args.space:
        sp = get_space(args.space)
        info["in_space"] = {"space": sp.name, "faults": sp.check(cfg)}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{cfg.name or args.arch}: {cfg.summary()}")
    print(f"  params {info['params'] / 1e6:.2f} M, MACs {info['macs'] / 1e6:.1f} M, "
          f"{cfg.num_classes} classes{', distillation head' if cfg.distillation else ''}")
    print(f"  stem: 3x3 s2 conv {cfg.in_chans}->{cfg.stem_width}, 3x3 s2 conv ->{cfg.stages[0].width}")
    for si, st in enumerate(cfg.stages):
        parts = []
        for b in st.blocks:
            if b.kind == "mb4d":
                parts.append(f"mb4d(r{b.mlp_ratio:g})")
            elif b.kind == "mb3d":
                parts.append(f"mb3d(h{b.heads} qk{b.qk_dim} v{b.v_dim} r{b.mlp_ratio:g})")
            else:
                parts.append("skip")
        print(f"  stage {si + 1} [{st.width} ch, {cfg.resolution(si)}x{cfg.resolution(si)}]: {' '.join(parts)}")
    if args.space:
        faults = info["in_space"]["faults"]
        print(f"  in space {info['in_space']['space']!r}: " + ("yes" if not faults else "no: " + "; ".join(faults)))
    return 0
