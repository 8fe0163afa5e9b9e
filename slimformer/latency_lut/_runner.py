#!/usr/bin/env python3
"""Measure every op model of a slimformer latency bundle on this device and write a results JSON.

This file is copied verbatim into every bundle as ``run_bundle.py``; it imports nothing from slimformer.
Needs only numpy plus onnxruntime (ONNX bundles), or coremltools on macOS (CoreML bundles).

    python run_bundle.py                      # the bundle in this script's folder -> results.json
    python run_bundle.py BUNDLE_DIR -o results.json --warmup 10 --repeats 50 --threads 1

For each op: load the model, run it ``warmup`` times, then time ``repeats`` single calls (fewer, never under
5, when they would take over ``--max-time-s``, as ``lut build`` times them; ``--op-repeats N``: N calls and no
noise retry, as ``lut build`` times its ops); record the median, the spread (interquartile range) and the count. The bundle's calibration subnets (whole networks)
are measured the same way, spread among the ops, which are taken in a shuffled order (see ``schedule``):
``slimformer lut import`` fits the table's composition correction on them. As ``lut build`` times them, each
calibration subnet alternates call by call with the bundle's reference subnet, and each op with its reference
op when the manifest names one (``write_bundle(pair_ops=True)``; ``ratio`` and ``ref_ms`` recorded): the import
puts those measurements at the run's level. Paired ops whose reference op ran more than 25 % off its median over
the run are measured again, once, at its end (``retaken`` lists them). A measurement whose spread exceeds ``--noise``
times its median is taken again (up to ``--retries`` times) and the attempt with the lowest median is kept.
With an ONNX bundle, the first ``--profile N`` calibration subnets then run with onnxruntime's per-node profiler
(by default, as ``lut build`` does: none when the bundle pairs them with a reference subnet, else half of them):
the import gives each node's time to its op and keeps the ops' in-context factors where they fit the calibration
subnets better than the ops timed alone.
The per-call overhead of the runtime is measured on the bundle's no-op model the same way. The results
file is rewritten atomically after every op, so a killed run resumes where it stopped (``--fresh`` to start
over). Bring the results back and run ``slimformer lut import results.json --name MY-DEVICE``.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import random
import sys
import tempfile
import time

RESULTS_SCHEMA = "slimformer.lut-results/1"
BUNDLE_SCHEMA = "slimformer.lut-bundle/1"
PROFILE_WARMUP, PROFILE_RUNS = 3, 7  # a calibration subnet profiled node by node, as ``lut build`` profiles it
#: What tables are measured with: onnxruntime's CPU session, eager PyTorch on the CPU, and eager PyTorch on the
#: first CUDA GPU (``torch-cuda``: each call ends with ``torch.cuda.synchronize()`` so the host clock times the GPU).
BACKENDS = ("onnxruntime", "torch", "torch-cuda")
TIME_CAP_S, MIN_REPEATS = 1.0, 5  # seconds of timed calls per measurement, and the fewest calls the cap leaves
# timed calls per op in ``lut build`` (whole subnets keep 15), with no noise retry: a network's prediction sums 15-65 ops
# (median 33, about 22 of even weight) whose timing errors are independent, so an op's ratio repeating within 2-3 % at 5 calls
# against 1.3-1.6 % at 15 puts 0.4-0.7 % on a network, under the 2-3 % its own timing repeats within, and takes the
# ops' timing from 185-198 to 81-86 s at 2 threads x batch 4 (docs/lut-fidelity.md, twentieth session)
OP_REPEATS = 5
# an op is timed in alternation with the reference op, which is called once untimed before each timed call: a
# large op pushes a small reference out of cache, and that slowdown is the op's, not the machine's (issue 17)
REF_WARM = 1
# an op whose reference op ran more than this share off its median over the run was timed in a phase where the
# two did not slow alike (at 2 threads, mostly beside large ops): it is measured again, once, at the run's end
RETAKE_BEYOND = 0.25
#: onnxruntime's intra-op threads do not spin between parallel sections (``session.intra_op.allow_spinning``).
#: Measured at 2 threads / batch 4 on a 2-core machine (docs/lut-fidelity.md): with spinning, 4 random subnets ran
#: 1.3-1.7x slower and a 3x3 convolution's median moved 4x as much between rounds, since the spinning thread
#: takes the core the work needs. Every session here, and every session a bundle runner opens, is made so.
ALLOW_SPINNING = "0"


def fail(msg: str) -> None:
    print(f"run_bundle: error: {msg}", file=sys.stderr)
    sys.exit(2)


def write_json(path: str, obj) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".results.", suffix=".tmp", dir=d)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def manifest_id(manifest: dict) -> str:
    """Content id of a manifest (what ``slimformer lut import`` checks results against)."""
    blob = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ backends
def onnx_session(model, threads: int, profile_prefix: str | None = None):
    """An onnxruntime CPU session (ONNX bytes or a file path) with ``threads`` intra-op threads that do not
    spin (:data:`ALLOW_SPINNING`), every graph optimisation on, sequential execution; with ``profile_prefix``
    its per-node profiler is on."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", ALLOW_SPINNING)
    if profile_prefix:
        so.enable_profiling, so.profile_file_prefix = True, profile_prefix
    model = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def random_feeds(inputs: list) -> dict:
    """fp32 inputs of the manifest's names and shapes (seeded: every run feeds the same numbers)."""
    import numpy as np

    rng = np.random.default_rng(0)
    return {i["name"]: rng.standard_normal(i["shape"]).astype(np.float32) for i in inputs}


def onnx_loader(threads: int):
    import numpy as np
    import onnxruntime as ort

    def load(path: str, inputs: list):
        run, feeds = onnx_session(path, threads).run, random_feeds(inputs)
        return lambda: run(None, feeds)

    info = {"runtime": "onnxruntime", "onnxruntime": ort.__version__, "numpy": np.__version__,
            "providers": ["CPUExecutionProvider"], "allow_spinning": ALLOW_SPINNING}
    return load, info


def profile_onnx(model, feeds: dict, threads: int, runs: int) -> list:
    """The raw onnxruntime profile events of ``runs`` calls of ``model`` (its per-node profiler on)."""
    with tempfile.TemporaryDirectory(prefix="sf-profile-") as tmp:
        sess = onnx_session(model, threads, os.path.join(tmp, "p"))
        for _ in range(runs):
            sess.run(None, feeds)
        with open(sess.end_profiling(), encoding="utf-8") as f:
            return json.load(f)


def profile_runs(events: list) -> list:
    """onnxruntime profile ``events`` -> one ``{"run_us", "nodes": [[node name, us], ...]}`` per whole run, its
    kernels in order, names without the profiler's ``_kernel_time`` (slimformer gives each node to an op)."""
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    nodes = sorted((e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")),
                   key=lambda e: e["ts"])
    out, i = [], 0
    for r in runs:
        end, cur = r["ts"] + r["dur"], []
        while i < len(nodes) and nodes[i]["ts"] < r["ts"]:
            i += 1
        while i < len(nodes) and nodes[i]["ts"] <= end:
            cur.append([nodes[i]["name"][:-len("_kernel_time")], nodes[i]["dur"]])
            i += 1
        out.append({"run_us": r["dur"], "nodes": cur})
    return out


def coreml_loader(compute_units: str):
    """macOS only: each model loaded with ``compute_units`` (ALL by default: CPU, GPU and Neural Engine, as an
    app gets them), fed fp32 inputs of the manifest's shapes; timed like the ONNX models."""
    if sys.platform != "darwin":
        fail(f"this is a CoreML bundle and CoreML models run only on macOS, not on {sys.platform} "
             "(coremltools converts models everywhere but predicts only on macOS)")
    try:
        import coremltools as ct
    except ImportError:
        fail("this is a CoreML bundle: install coremltools (pip install coremltools) on this Mac")
    units = getattr(ct.ComputeUnit, compute_units, None)
    if units is None:
        fail(f"unknown --compute-units {compute_units!r}: use one of "
             f"{', '.join(u.name for u in ct.ComputeUnit)}")

    def load(path: str, inputs: list):
        predict, feeds = ct.models.MLModel(path, compute_units=units).predict, random_feeds(inputs)
        return lambda: predict(feeds)

    return load, {"runtime": "coremltools", "coremltools": ct.__version__, "compute_units": compute_units}


def schedule(items: list, n_calibration: int, rounds: int = 1, seed: int = 7) -> list:
    """The items shuffled, with ``rounds`` measurements of each calibration subnet spread among them (item
    ``j``, an int, is subnet ``j % n_calibration``), as ``lut build`` does: drift in the device's speed then
    averages out over a network's ops instead of hitting one op kind, and the import keeps each subnet's
    faster round."""
    order = list(items)
    random.Random(seed).shuffle(order)
    total = n_calibration * rounds
    for j in reversed(range(total)):
        order.insert(int((j + 0.5) * len(items) / total), j)
    return order


# ------------------------------------------------------------------------------------------------ timing
def warm_up(fn, warmup: int, max_time_s) -> float | None:
    """Run ``fn`` ``warmup`` times (with a cap, stop after 2 once they took ``max_time_s``); the mean
    seconds of a call, or None without warm-up."""
    t0, done = time.perf_counter(), 0
    while done < warmup:
        fn()
        done += 1
        if max_time_s and done >= 2 and time.perf_counter() - t0 >= max_time_s:
            break
    return (time.perf_counter() - t0) / done if done else None


def capped(repeats: int, per_call_s: float | None, max_time_s: float | None) -> int:
    """``repeats``, or fewer (never under ``MIN_REPEATS``) when that many calls would take over ``max_time_s``."""
    if not max_time_s or not per_call_s:
        return repeats
    return min(repeats, max(MIN_REPEATS, int(max_time_s / max(per_call_s, 1e-7))))


def summary(ts: list) -> dict:
    """Median, spread (interquartile range) and count of per-call times in ms."""
    ts = sorted(ts)
    n = len(ts)
    med = ts[n // 2] if n % 2 else (ts[n // 2 - 1] + ts[n // 2]) / 2
    return {"median_ms": med, "spread_ms": ts[(3 * n) // 4] - ts[n // 4], "count": n}


def time_paired(fn, ref, n: int, now=time.perf_counter_ns, ref_warm: int = 0) -> tuple:
    """``n`` calls of ``fn`` and of the reference ``ref`` in alternation (fn, ref, fn, ref, ...): the per-call
    ms of each. The machine's speed moves on a scale of seconds and less; two networks timed call by call
    move together, so their ratio repeats where each one's own median does not (docs/lut-fidelity.md).
    ``ref_warm`` untimed calls of ``ref`` go before each timed one, so that ``fn``'s traffic (a large op
    pushes a small reference's weights out of cache) does not slow the reference's timing."""
    a, b = [], []
    for _ in range(n):
        t0 = now()
        fn()
        t1 = now()
        for _ in range(ref_warm):
            ref()
        t2 = now()
        ref()
        b.append((now() - t2) / 1e6)
        a.append((t1 - t0) / 1e6)
    return a, b


def time_paired_sized(fn, ref, count, now=time.perf_counter_ns, ref_warm: int = 0) -> tuple:
    """:func:`time_paired`, with the number of pairs ``count(s)`` where ``s`` is the seconds the first timed pair
    took (its ``ref_warm`` untimed reference calls counted as long as the timed one). Only ``fn`` needs warming up
    before it: the reference is warmed once where it is made (:func:`warmed`) and runs in every measurement after,
    so sizing a measurement by its first pair costs no reference call (a warm-up of whole pairs cost two: 0.95 s each
    for a calibration subnet at batch 16, docs/lut-fidelity.md)."""
    a, b = time_paired(fn, ref, 1, now, ref_warm)
    n = count((a[0] + (ref_warm + 1) * b[0]) / 1e3)
    a2, b2 = time_paired(fn, ref, max(n - 1, 0), now, ref_warm)
    return a + a2, b + b2


def warmed(ref, warmup: int = 3, max_time_s: float | None = TIME_CAP_S):
    """``ref`` after :func:`warm_up`: a reference is warmed once where it is made, not in each measurement."""
    warm_up(ref, warmup, max_time_s)
    return ref


def paired_figures(a: list, b: list) -> dict:
    """``ref_ms`` (the reference's median in these calls) and ``ratio``: the median over the pairs of each ``fn``
    call divided by the reference call beside it. A pair shares the machine's speed of its moment, so each pair's
    ratio takes out the level the pair ran at, where the ratio of the two medians takes it out only on the whole:
    the same subnets measured in six rounds at 2 threads, batch 1 moved by sd 1.64 % against 2.62 % (default space)
    and 2.25 % against 2.84 % (EfficientViT), and at batch 4 with another seed 1.24 % against 2.83 %
    (``benchmarks/paired_ratio.py``, docs/lut-fidelity.md)."""
    ref_ms = summary(b)["median_ms"]
    return {"ref_ms": ref_ms, "ratio": summary([x / max(y, 1e-9) for x, y in zip(a, b)])["median_ms"]}


def measure(fn, warmup: int, repeats: int, noise: float, retries: int, max_time_s: float | None = None,
            ref=None, ref_warm: int = 0) -> dict:
    """Median, spread and count of ``repeats`` calls (:func:`capped` by ``max_time_s``, as ``lut build``
    times them); with a reference ``ref``, the calls alternate with it (``ref_warm`` untimed reference calls
    before each timed one, :func:`time_paired_sized`: ``ref`` must be :func:`warmed`) and :func:`paired_figures`
    are added."""
    per_call = warm_up(fn, warmup, max_time_s)
    best = None
    for attempt in range(retries + 1):
        if ref is None:
            cur = summary([time_one(fn) for _ in range(capped(repeats, per_call, max_time_s))])
        else:
            a, b = time_paired_sized(fn, ref, lambda s: capped(repeats, s, max_time_s), ref_warm=ref_warm)
            cur = {**summary(a), **paired_figures(a, b)}
        cur["attempts"] = attempt + 1
        if best is None or cur["median_ms"] < best["median_ms"]:
            best = cur
        if cur["spread_ms"] <= noise * cur["median_ms"]:
            break
    best["attempts"] = attempt + 1
    return best


def time_one(fn) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e6


def build_parser() -> argparse.ArgumentParser:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description="Measure a slimformer latency bundle on this device.")
    ap.add_argument("bundle", nargs="?", default=here, help="bundle folder (default: this script's folder)")
    ap.add_argument("-o", "--output", default=None, help="results JSON (default: BUNDLE/results.json)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--op-repeats", type=int, default=None,
                    help="timed calls per op, with no noise retry (default: --repeats, retried; lut build times ops "
                         f"{OP_REPEATS} calls: a network sums many ops, so their noise averages out)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (onnxruntime)")
    ap.add_argument("--noise", type=float, default=0.1, help="re-measure when IQR > noise * median")
    ap.add_argument("--retries", type=int, default=2)
    ap.add_argument("--max-time-s", type=float, default=TIME_CAP_S,
                    help=f"seconds of timed calls per measurement (default {TIME_CAP_S:g}): longer calls get fewer "
                         f"repeats, never under {MIN_REPEATS}; 0 for no cap")
    ap.add_argument("--profile", type=int, default=None,
                    help="ONNX: calibration subnets also run with onnxruntime's per-node profiler, so that the "
                         "import can time the ops in context as lut build does (default, as lut build: none when the bundle "
                         "pairs them with its reference subnet, else half of them; 0: none)")
    ap.add_argument("--pair-ops", choices=("auto", "on", "off"), default="auto",
                    help="time every op in alternation with the bundle's reference op: auto (default) at more than "
                         "one thread and for CoreML, on, or off")
    ap.add_argument("--compute-units", default="ALL", help="CoreML compute units: ALL, CPU_AND_NE, CPU_ONLY...")
    ap.add_argument("--device-name", default=None, help="a name for this device (default: the host's)")
    ap.add_argument("--fresh", action="store_true", help="ignore earlier results in the output file")
    return ap


def read_bundle_manifest(bundle: str) -> dict:
    """The bundle's manifest, or a one-line error and exit."""
    man_path = os.path.join(bundle, "manifest.json")
    try:
        with open(man_path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"no readable bundle manifest at {man_path} ({e.__class__.__name__})")
    if not isinstance(manifest, dict) or manifest.get("schema") != BUNDLE_SCHEMA:
        fail(f"{man_path} is not a slimformer bundle manifest (schema {BUNDLE_SCHEMA!r})")
    return manifest


def load_results(out: str, mid: str, settings: dict, fresh: bool):
    """Earlier results in ``out`` of this bundle with these settings (to resume), else None."""
    if not os.path.isfile(out) or fresh:
        return None
    try:
        with open(out) as f:
            results = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(results, dict) or results.get("manifest_id") != mid or results.get("settings") != settings:
        return None  # another bundle or other settings: start over
    return results


def new_results(manifest: dict, mid: str, info: dict, settings: dict, device_name) -> dict:
    """Empty results of this bundle on this device, nothing measured yet."""
    return {
        "schema": RESULTS_SCHEMA, "manifest_id": mid, "format": manifest["format"], "space": manifest["space"],
        "space_hash": manifest["space_hash"], "batch": manifest.get("batch", 1),
        "device": device_name or platform.node() or "unknown",
        "platform": {"system": platform.platform(), "machine": platform.machine(),
                     "processor": platform.processor(), "python": platform.python_version()},
        "runtime": info, "settings": settings,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "complete": False, "overhead": None, "entries": {}, "calibration": {},
    }


def measure_item(item, results: dict, cal: list, load, args, ref=None, ref_op=None) -> tuple[str, dict]:
    """Measure one item of the schedule (an op row, or a calibration subnet's index) into ``results``;
    returns its label and result. Calibration subnets alternate call by call with the bundle's reference
    network ``ref``, ops with its reference op ``ref_op``, when it has them (as ``lut build`` times them)."""
    timing = (args.warmup, args.repeats, args.noise, args.retries, args.max_time_s)
    if isinstance(item, int):  # a whole calibration subnet
        ci = item % len(cal)
        sub = cal[ci]
        fn = load(os.path.join(args.bundle, sub["file"]), sub["inputs"])
        r = results["calibration"][str(item)] = {"arch": sub["arch"], "index": ci, "round": item // len(cal),
                                                 **measure(fn, *timing, ref=ref)}
        return f"calibration subnet {ci}", r
    fn = load(os.path.join(args.bundle, item["file"]), item["inputs"])
    op_timing = (args.warmup, args.op_repeats, args.noise, 0, args.max_time_s) if args.op_repeats is not None else timing
    r = results["entries"][item["key"]] = measure(fn, *op_timing, ref=ref_op, ref_warm=REF_WARM if ref_op else 0)
    return item["key"], r


def pairs_ops(choice, threads: int, fmt: str = "onnx") -> bool:
    """Whether every op is timed in alternation with the reference op: ``choice`` when it is True or False,
    else (``None``) at more than one thread, and always for CoreML, whose models run on every unit they may use.
    Measured here (docs/lut-fidelity.md): at 1 thread ops timed alone compose within the targets and pairing
    only lengthens the build; at 2 threads an op's own median moves by a third between rounds of a build,
    its ratio to the reference op by an eighth."""
    if choice is not None:
        return bool(choice)
    return fmt == "coreml" or threads > 1


def moved_ops(entries: dict, done: list) -> list:
    """The paired ops whose reference op ran beyond :data:`RETAKE_BEYOND` of its median over all paired ops
    (not those in ``done``, already retaken once)."""
    refs = [e["ref_ms"] for e in entries.values() if "ref_ms" in e]
    if not refs:
        return []
    level = summary(refs)["median_ms"]
    return [k for k, e in entries.items()
            if "ref_ms" in e and k not in done and abs(e["ref_ms"] / level - 1) > RETAKE_BEYOND]


def retake_moved(ops: list, results: dict, load, args, out: str, ref_op) -> None:
    """Measure again, once, every op :func:`moved_ops` names; their keys go into ``results["retaken"]``
    before each is measured, so a resumed run does not take one a third time."""
    done = results.setdefault("retaken", [])
    by_key = {o["key"]: o for o in ops}
    moved = moved_ops(results["entries"], done)
    for i, key in enumerate(moved):
        done.append(key)
        label, r = measure_item(by_key[key], results, [], load, args, ref_op=ref_op)
        write_json(out, results)
        print(f"\rretaken {i + 1}/{len(moved)} {label:<40s} {r['median_ms']:8.3f} ms", end="", file=sys.stderr,
              flush=True)


def measure_all(todo: list, total: int, results: dict, cal: list, load, args, out: str, ref=None,
                ref_op=None) -> None:
    """Measure ``todo`` (the rest of a schedule of ``total`` items), writing ``out`` after each one and
    printing a progress line."""
    t_start = time.time()
    for i, item in enumerate(todo):
        label, r = measure_item(item, results, cal, load, args, ref, ref_op)
        write_json(out, results)
        done = total - len(todo) + i + 1
        el = time.time() - t_start
        eta = el / (i + 1) * (len(todo) - i - 1)
        print(f"\r[{done}/{total}] {label:<40s} {r['median_ms']:8.3f} ms  eta {eta:5.0f}s", end="",
              file=sys.stderr, flush=True)


def profile_calibration(results: dict, cal: list, args, out: str) -> None:
    """The first ``args.profile`` calibration subnets run with onnxruntime's per-node profiler: each kept
    run's node times go into ``results["context"]`` (``slimformer lut import`` gives them to the table's ops)."""
    ctx = results.setdefault("context", [])
    for ci in range(len(ctx), min(args.profile, len(cal))):
        sub = cal[ci]
        events = profile_onnx(os.path.join(args.bundle, sub["file"]), random_feeds(sub["inputs"]), args.threads,
                              PROFILE_WARMUP + PROFILE_RUNS)
        ctx.append({"index": ci, "arch": sub["arch"], "runs": profile_runs(events)[PROFILE_WARMUP:]})
        write_json(out, results)
        print(f"\rprofiled calibration subnet {ci} node by node ({ci + 1}/{args.profile})", end="",
              file=sys.stderr, flush=True)


def default_profile(manifest: dict) -> int:
    """How many calibration subnets an ONNX bundle's run profiles node by node unless told, as ``lut build``:
    none when they are paired with the bundle's reference subnet (the in-context factors never fitted a paired
    build better than the ops alone), else half of them."""
    return 0 if manifest.get("reference") else (len(manifest.get("calibration", [])) + 1) // 2


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if (args.warmup < 0 or args.repeats < 1 or (args.op_repeats is not None and args.op_repeats < 1) or args.threads < 1 or args.retries < 0
            or (args.profile or 0) < 0 or not args.max_time_s >= 0):
        fail("--warmup >= 0, --repeats >= 1, --op-repeats >= 1, --threads >= 1, --retries >= 0, --profile >= 0 and "
             "--max-time-s >= 0, please")
    manifest = read_bundle_manifest(args.bundle)
    fmt = manifest["format"]
    load, info = onnx_loader(args.threads) if fmt == "onnx" else coreml_loader(args.compute_units)
    out = args.output or os.path.join(args.bundle, "results.json")
    mid = manifest_id(manifest)
    cal = manifest.get("calibration", [])
    if fmt != "onnx" or args.profile is None:
        args.profile = default_profile(manifest) if fmt == "onnx" else 0  # CoreML has no per-node profiler to call
    settings = {"warmup": args.warmup, "repeats": args.repeats, "threads": args.threads, "noise": args.noise,
                "retries": args.retries, "compute_units": args.compute_units if fmt == "coreml" else None,
                "profile": args.profile, "max_time_s": args.max_time_s,
                "pair_ops": bool(manifest.get("reference_op"))
                and pairs_ops({"auto": None, "on": True, "off": False}[args.pair_ops], args.threads, fmt),
                **({"op_repeats": args.op_repeats} if args.op_repeats is not None else {})}  # absent: results of older runners resume
    results = load_results(out, mid, settings, args.fresh)
    if results is None:
        results = new_results(manifest, mid, info, settings, args.device_name)

    rounds = int(manifest.get("calibration_rounds", 1))
    results.setdefault("calibration", {})
    order = schedule(manifest["ops"], len(cal), rounds)
    todo = [x for x in order
            if (str(x) not in results["calibration"] if isinstance(x, int) else x["key"] not in results["entries"])]
    if results["overhead"] is None:
        noop = manifest["noop"]
        results["overhead"] = measure(load(os.path.join(args.bundle, noop["file"]), noop["inputs"]),
                                      args.warmup, args.repeats, args.noise, args.retries, args.max_time_s)
        write_json(out, results)
    reference = manifest.get("reference")
    ref_op = manifest.get("reference_op") if settings["pair_ops"] else None
    results["reference_op"] = ref_op["key"] if ref_op else None

    def warm_ref(item):  # a reference is warmed once, here, not in every measurement beside it
        return warmed(load(os.path.join(args.bundle, item["file"]), item["inputs"]), args.warmup, args.max_time_s)
    ref = warm_ref(reference) if reference and todo else None
    ref_op = warm_ref(ref_op) if ref_op else None
    measure_all(todo, len(order), results, cal, load, args, out, ref, ref_op)
    if ref_op is not None:
        retake_moved(manifest["ops"], results, load, args, out, ref_op)
    profile_calibration(results, cal, args, out)
    results["complete"] = True
    results["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    write_json(out, results)
    print(f"\nmeasured {len(manifest['ops'])} ops and {len(cal)} calibration subnets ({args.profile} profiled node "
          f"by node; per-call overhead {results['overhead']['median_ms']:.4f} ms); wrote {out}", file=sys.stderr)
    print(f"next: slimformer lut import {out} --name NAME", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
