"""Tables for devices we cannot reach: a bundle of every op as a model file, and importing its results.

``write_bundle(dir, space=..., fmt="onnx"|"coreml")`` writes::

    DIR/manifest.json      the space, every op key with its model file and input shapes, a no-op model
    DIR/models/<key>.onnx  (or .mlpackage) one model per op of the space, built by ``build_op``
    DIR/models/_calibration-<i>.onnx  whole random subnets (the build's calibration subnets)
    DIR/run_bundle.py      a standalone runner (numpy + onnxruntime, or coremltools on macOS)

Copy the folder to the device, run ``python run_bundle.py``, bring back ``results.json`` and
``import_results`` turns it into a table of kind ``imported`` (entries with the per-call overhead
removed; the overhead becomes the table's), with the composition correction fitted on the calibration
subnets exactly as ``lut build`` fits it here. The bundle resumes: files already written are kept.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from .._errors import ConfigError, SlimformerError
from .._io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from .._version import __version__
from ..supernet import SearchSpace, arch_from_dict, build_model, space_from_dict
from ._keys import space_ops
from ._measure import ONNX_EXPORT, OPSET
from ._runner import BUNDLE_SCHEMA, RESULTS_SCHEMA, manifest_id

FORMATS = ("onnx", "coreml")
COREML_HINT = "pip install 'slimformer[coreml]' (or: pip install coremltools)"


def _inputs(example) -> list[dict[str, Any]]:
    return [{"name": f"x{i}", "shape": list(t.shape)} for i, t in enumerate(example)]


def _noop_onnx() -> bytes:
    """A model that only copies a 1x1 tensor: what one call costs the runtime itself."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x0", TensorProto.FLOAT, ["batch", 1])
    y = helper.make_tensor_value_info("y0", TensorProto.FLOAT, ["batch", 1])
    graph = helper.make_graph([helper.make_node("Identity", ["x0"], ["y0"])], "noop", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


class _Scale(torch.nn.Module):
    """The CoreML no-op: one multiply of a 1x1 tensor (a converter may refuse a graph with no op at all)."""

    def forward(self, x):
        return x * 2.0


@contextlib.contextmanager
def quiet():
    """Silence coremltools: its import notices (no macOS runtime, untested torch/scikit-learn versions),
    warnings and per-conversion progress bars, which would bury the bundle's one progress bar."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        level = logging.getLogger("coremltools").level
        logging.getLogger("coremltools").setLevel(logging.ERROR)
        try:
            yield
        finally:
            logging.getLogger("coremltools").setLevel(level)


def _coreml():
    try:
        with quiet():
            import coremltools as ct
    except ImportError:
        raise SlimformerError(f"CoreML bundles need coremltools, which is not installed: {COREML_HINT}") from None
    return ct


def convert_coreml(ct, module, example, *, what: str):
    """``module`` traced on ``example`` and converted to an ML Program (iOS 16, fp16 compute); a failure is
    one :class:`SlimformerError` naming ``what``, never the converter's traceback."""
    inputs = [ct.TensorType(name=i["name"], shape=tuple(i["shape"])) for i in _inputs(example)]
    try:
        with quiet(), torch.no_grad():
            traced = torch.jit.trace(module.eval(), tuple(example))
            return ct.convert(traced, inputs=inputs, convert_to="mlprogram",
                              minimum_deployment_target=ct.target.iOS16)
    except Exception as e:  # noqa: BLE001 - the converter raises anything; the user needs the op and the cause
        msg = (str(e).strip().splitlines() or [""])[-1][:200]
        raise SlimformerError(f"CoreML conversion of {what} failed (coremltools {ct.__version__}, torch {torch.__version__}): "
                              f"{type(e).__name__}: {msg}") from None


def _save_coreml(ct, module, example, path: Path, *, what: str) -> None:
    save_package(convert_coreml(ct, module, example, what=what), path)


def save_package(ml, path: Path) -> Path:
    """Save a converted model as ``path`` (an .mlpackage folder) atomically: written beside, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        with quiet():
            ml.save(str(tmp / path.name))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp / path.name, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _calibration_net(cfg):
    net = build_model(cfg).eval()  # random weights: only the latency is measured
    return net, (torch.zeros(1, cfg.in_chans, cfg.img_size, cfg.img_size),)


def _check_folder(out: Path, space: SearchSpace, fmt: str) -> None:
    """``out`` may be new, or a folder holding a partial bundle of the same space and format."""
    if out.exists() and not out.is_dir():
        raise SlimformerError(f"bundle output {out} exists and is not a folder")
    old = out / "manifest.json"
    if old.is_file():
        prev = read_json(old, "bundle manifest")
        if isinstance(prev, dict) and (prev.get("space_hash") != space.hash or prev.get("format") != fmt):
            raise SlimformerError(f"{out} already holds a bundle of another space or format; choose another folder")


def _write_model(path: Path, module, example, *, fmt: str, ct, what: str) -> None:
    """One model file of the bundle, unless an earlier run wrote it already."""
    if path.exists():
        return
    if fmt == "onnx":
        from ._measure import export_onnx

        atomic_write_bytes(path, export_onnx(module, example))
    else:
        _save_coreml(ct, module, example, path, what=what)


def _write_models(out: Path, items: list, cal_cfgs: list, *, fmt: str, ct,
                  progress: bool) -> tuple[list[dict], list[dict]]:
    """A model per op key and per calibration subnet index of ``items``; their manifest rows (ops, calibration)."""
    from ._ops import build_op

    ext = ".onnx" if fmt == "onnx" else ".mlpackage"
    ops, cal = [], []
    it = items
    if progress:
        from tqdm import tqdm

        it = tqdm(items, desc=f"bundle ({fmt})", unit="model")
    for item in it:
        if isinstance(item, int):
            rel = f"models/_calibration-{item}{ext}"
            module, example = _calibration_net(cal_cfgs[item])
            what = f"calibration subnet {item} ({cal_cfgs[item].summary()})"
        else:
            rel = f"models/{item}{ext}"
            module, example = build_op(item)
            what = f"op {item}"
        _write_model(out / rel, module, example, fmt=fmt, ct=ct, what=what)
        if isinstance(item, int):
            cal.append({"arch": cal_cfgs[item].to_dict(), "file": rel, "inputs": _inputs(example)})
        else:
            ops.append({"key": item, "file": rel, "inputs": _inputs(example)})
    return ops, cal


def _write_noop(out: Path, *, fmt: str, ct) -> str:
    """The no-op model (what one call costs the runtime); its path inside the bundle."""
    rel = f"models/_noop{'.onnx' if fmt == 'onnx' else '.mlpackage'}"
    if not (out / rel).exists():
        if fmt == "onnx":
            atomic_write_bytes(out / rel, _noop_onnx())
        else:
            _save_coreml(ct, _Scale(), (torch.zeros(1, 1),), out / rel, what="the no-op model")
    return rel


def _write_reference(out: Path, space: SearchSpace, *, fmt: str, ct) -> dict[str, Any]:
    """The reference subnet the calibration subnets alternate with (as ``lut build`` times them); its manifest row."""
    from ._fidelity import reference_config

    cfg = reference_config(space)
    rel = f"models/_reference{'.onnx' if fmt == 'onnx' else '.mlpackage'}"
    module, example = _calibration_net(cfg)
    _write_model(out / rel, module, example, fmt=fmt, ct=ct, what=f"the reference subnet ({cfg.summary()})")
    return {"arch": cfg.to_dict(), "file": rel, "inputs": _inputs(example)}


def write_bundle(out_dir: str | Path, *, space: SearchSpace | None = None, fmt: str = "onnx",
                 calibration: int = 10, progress: bool = True, pair_ops: bool = True) -> Path:
    """Write the bundle for ``space`` into ``out_dir``; returns the manifest path. Resumes a partial bundle.

    ``calibration`` whole subnets (``lut build``'s calibration subnets) go with the ops, so that the
    imported table gets the same composition correction as a table built here. With ``pair_ops`` (the
    default) the manifest names the reference op and the runner times every op in alternation with it
    where ``lut build`` would (at more than one thread, and CoreML; ``run_bundle.py --pair-ops``)."""
    from ._build import calibration_configs

    if fmt not in FORMATS:
        raise SlimformerError(f"unknown bundle format {fmt!r}: choose {' or '.join(FORMATS)}")
    ct = _coreml() if fmt == "coreml" else None
    space = space or SearchSpace()
    out = Path(out_dir)
    _check_folder(out, space, fmt)
    (out / "models").mkdir(parents=True, exist_ok=True)
    if calibration < 0:
        raise SlimformerError("--calibration must be 0 or more")
    keys = space_ops(space)
    cal_cfgs = calibration_configs(space, calibration)
    ops, cal = _write_models(out, [*keys, *range(len(cal_cfgs))], cal_cfgs, fmt=fmt, ct=ct, progress=progress)
    noop_rel = _write_noop(out, fmt=fmt, ct=ct)
    runner = atomic_write_text(out / "run_bundle.py", (Path(__file__).parent / "_runner.py").read_text(encoding="utf-8"))
    runner.chmod(0o755)
    manifest = {"schema": BUNDLE_SCHEMA, "format": fmt, "space": space.to_dict(), "space_hash": space.hash,
                "batch": 1, "slimformer": __version__, "torch": torch.__version__,
                "noop": {"file": noop_rel, "inputs": [{"name": "x0", "shape": [1, 1]}]}, "ops": ops,
                "calibration": cal, "calibration_rounds": 1}  # paired below, as `lut build` is (one round)
    if cal:  # paired like `lut build`: subnets with the reference subnet, ops with the reference op
        manifest["reference"] = _write_reference(out, space, fmt=fmt, ct=ct)
    if cal and pair_ops:
        from ._fidelity import reference_op

        manifest["reference_op"] = next(row for row in ops if row["key"] == reference_op(space))
    if fmt == "onnx":
        manifest["onnx_export"] = dict(ONNX_EXPORT)  # the models were exported as tables and deployments are
    return atomic_write_json(out / "manifest.json", manifest)


def read_manifest(bundle: str | Path) -> dict[str, Any]:
    p = Path(bundle)
    p = p / "manifest.json" if p.is_dir() else p
    m = read_json(p, "bundle manifest")
    if not isinstance(m, dict) or m.get("schema") != BUNDLE_SCHEMA:
        raise SlimformerError(f"{p} is not a slimformer bundle manifest (schema {BUNDLE_SCHEMA!r})")
    return m


def _apply_device_context(table, context: list, calibration: list, *, method: str) -> None:
    """The runner's per-node profiles of calibration subnets, given to the ops as ``lut build`` gives its own."""
    from ._context import apply_context, attribute_runs, summarize_runs

    profiles = [{"index": p["index"], **summarize_runs(attribute_runs(p["runs"], arch_from_dict(p["arch"])))}
                for p in context if p.get("runs")]
    if profiles:
        apply_context(table, profiles, calibration, method=method)


def _check_op_set(space: SearchSpace, entries: dict, src: str) -> None:
    """Refuse results that did not measure exactly the ops of ``space``."""
    expected, got = set(space_ops(space)), set(entries)
    if expected == got:
        return
    missing, extra = sorted(expected - got), sorted(got - expected)
    parts = []
    if missing:
        parts.append(f"{len(missing)} op(s) of space {space.name!r} missing (e.g. {missing[0]})")
    if extra:
        parts.append(f"{len(extra)} op(s) not in the space (e.g. {extra[0]})")
    raise SlimformerError(f"{src} does not match its space: {'; '.join(parts)}")


def _imported_entry(e: dict, overhead: float) -> dict[str, Any]:
    """A runner's op result as a table entry: the overhead taken off (the ratio to the reference op kept)."""
    out = {"median_ms": max(float(e["median_ms"]) - overhead, 0.0), "spread_ms": float(e["spread_ms"]),
           "count": int(e["count"])}
    if "ratio" in e:
        out.update(ratio=float(e["ratio"]), ref_ms=float(e["ref_ms"]))
    return out


def _ops_at_reference(table, r: dict, overhead: float) -> None:
    """Ops the runner paired with the bundle's reference op, put at the run's level (as ``lut build`` does)."""
    from ._fidelity import entries_at_reference

    op_level = entries_at_reference(table.entries, overhead)
    if op_level is not None:
        table.meta["reference_op"] = {"key": r.get("reference_op"), **op_level, "retaken": len(r.get("retaken") or [])}
        table.refresh()


def import_results(results_path: str | Path, *, name: str, lut_dir: str | Path | None = None,
                   bundle: str | Path | None = None, space: SearchSpace | None = None):
    """Turn a runner's results JSON into a saved table of kind ``imported``; returns the table.

    Checks, each failing with one clear error: the file is complete results of a bundle, its space is
    intact (and is ``space`` if given), it comes from ``bundle`` if given, and it measured exactly the
    ops of its space."""
    from ._fidelity import at_reference, calibrate, reference_ms
    from ._registry import table_path
    from ._table import LatencyTable

    src = f"results file {results_path}"
    r = read_json(results_path, "results file")
    if not isinstance(r, dict) or r.get("schema") != RESULTS_SCHEMA:
        raise SlimformerError(f"{src} is not the output of a bundle's run_bundle.py (schema {RESULTS_SCHEMA!r})")
    try:
        entries, ov = r["entries"], r["overhead"]
        if not r.get("complete"):
            total = f" of {len(read_manifest(bundle)['ops'])}" if bundle else ""
            raise SlimformerError(f"{src} is incomplete ({len(entries)}{total} ops measured): run "
                                  f"run_bundle.py again to finish it (it resumes)")
        rspace = space_from_dict(r["space"])
        if rspace.hash != r["space_hash"]:
            raise SlimformerError(f"{src} is damaged: its space does not match its space hash")
        if space is not None and space.hash != rspace.hash:
            raise SlimformerError(f"{src} was measured for space {rspace.name!r} (hash {rspace.hash}), "
                                  f"not {space.name!r} (hash {space.hash})")
        if bundle is not None and manifest_id(read_manifest(bundle)) != r["manifest_id"]:
            raise SlimformerError(f"{src} does not come from the bundle in {bundle} (manifest id differs)")
        _check_op_set(rspace, entries, src)
        overhead = float(ov["median_ms"])
        table = LatencyTable(
            name=name, kind="imported", device=name, backend="onnxruntime" if r["format"] == "onnx" else "coreml",
            space=rspace, overhead_ms=overhead, correction=None, error=None,
            entries={k: _imported_entry(e, overhead) for k, e in entries.items()},
            threads=r["settings"].get("threads"), batch=int(r.get("batch", 1)),
            cpu=r["platform"].get("processor") or r["platform"].get("machine"), runtime=r.get("runtime"),
            date=(r.get("finished") or r.get("started") or "")[:10] or None,
            meta={"host": r.get("device"), "platform": r.get("platform"), "settings": r.get("settings"),
                  "manifest_id": r["manifest_id"], "overhead_spread_ms": ov.get("spread_ms")})
        _ops_at_reference(table, r, overhead)
        calibration = list(r.get("calibration", {}).values())
        ref_ms = reference_ms(calibration)  # paired with the bundle's reference subnet (newer bundles)
        if ref_ms is not None:
            table.meta["reference"] = {"median_ms": ref_ms}
            calibration = at_reference(calibration, ref_ms)
        method = "the bundle's calibration subnets, measured on the device (in-sample fit)"
        calibrate(table, calibration, method=method)
        _apply_device_context(table, r.get("context") or [], calibration, method=method)
    except ConfigError as e:
        raise SlimformerError(f"{src} is malformed: its space or a calibration subnet is invalid ({e})") from None
    except SlimformerError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise SlimformerError(f"{src} is malformed ({e.__class__.__name__}: {e})") from None
    table.save(table_path(name, lut_dir))
    return table
