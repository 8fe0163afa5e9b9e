"""CLI for latency tables of devices we cannot reach: ``lut bundle`` and ``lut import``."""
from __future__ import annotations

import argparse

from .._validate import NONNEG_INT
from ._options import add_json, add_run_folder, print_json


def register(lut_sub) -> None:
    """Add ``bundle`` and ``import`` to the ``lut`` subparsers (called from ``_lut.register``)."""
    p = lut_sub.add_parser("bundle", help="write every op of a space as a model file + a standalone runner, "
                                          "to measure a device this machine cannot reach")
    p.add_argument("--format", choices=("onnx", "coreml"), default="onnx",
                   help="onnx (runner needs numpy + onnxruntime) or coreml (.mlpackage; needs coremltools)")
    add_run_folder(p, "bundle", runs_root=False, required=True, help="bundle folder (resumes a partial bundle there)")
    add_json(p, "the bundle manifest path and size")
    p.add_argument("--space", default="default", help="space name (default, tiny) or JSON file")
    p.add_argument("--calibration", type=NONNEG_INT, default=10,
                   help="whole subnets to include, to fit the table's composition correction on (default 10)")
    p.add_argument("--pair-ops", action=argparse.BooleanOptionalAction, default=True,
                   help="name a reference op the runner times every op beside (run_bundle.py --pair-ops: at more "
                        "than one thread and for CoreML; default on)")
    p.set_defaults(func=_bundle)

    p = lut_sub.add_parser("import", help="turn a bundle runner's results JSON into a latency table")
    p.add_argument("results", help="results JSON written by run_bundle.py")
    p.add_argument("--name", required=True, help="table name, e.g. pixel7-ort")
    p.add_argument("--lut-dir", default=None, help="table folder (default ~/.cache/slimformer/luts)")
    p.add_argument("--bundle", default=None, help="also check the results come from this bundle folder")
    p.add_argument("--space", default=None, help="also check the results cover this space")
    add_json(p, "the imported table's summary")
    p.set_defaults(func=_import)


def _bundle(args) -> int:
    from ..latency_lut._bundle import write_bundle
    from ..supernet import get_space

    manifest = write_bundle(args.out, space=get_space(args.space), fmt=args.format, calibration=args.calibration,
                            pair_ops=args.pair_ops)
    size = sum(f.stat().st_size for f in manifest.parent.rglob("*") if f.is_file())
    if args.json:
        return print_json({"bundle": str(manifest.parent), "manifest": str(manifest), "format": args.format,
                           "space": args.space, "bytes": size})
    print(f"wrote bundle {manifest.parent} ({args.format}, space {args.space!r}, {size / 1e6:.1f} MB)")
    print(f"on the device: python {manifest.parent / 'run_bundle.py'}   (writes results.json there)")
    print(f"then here:     slimformer lut import {manifest.parent / 'results.json'} --name DEVICE-NAME")
    return 0


def _import(args) -> int:
    from ..latency_lut._bundle import import_results
    from ..supernet import get_space

    space = get_space(args.space) if args.space else None
    table = import_results(args.results, name=args.name, lut_dir=args.lut_dir, bundle=args.bundle, space=space)
    if args.json:
        return print_json({"name": table.name, "path": str(table.path), "entries": len(table.entries),
                           "overhead_ms": table.overhead_ms, "correction": table.correction, "error": table.error})
    print(f"imported {len(table.entries)} ops as table {table.name!r} (kind imported, per-call overhead "
          f"{table.overhead_ms:.4f} ms): {table.path}")
    if table.error:
        from ..latency_lut._fidelity import correction_text
        from ..latency_lut._validate import format_figures

        print(f"  correction {correction_text(table.correction)} fitted on {table.error['samples']} calibration "
              f"subnets; on them with it: {format_figures(table.error['corrected'])}")
    else:
        print("  no correction: the results hold fewer than 3 calibration subnets")
    return 0
