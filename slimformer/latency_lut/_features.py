"""Op features of any torch module: FLOPs by kind, elements moved by kind, and op counts.

``op_features(module, example_input)`` runs the module once under a :class:`TorchDispatchMode` that sees
every aten op and records what a graph converter (CoreML, ONNX) would keep of it:

- only ops that depend on the input count; ops on parameters alone (weight transposes, attention-bias
  gathers) are constant-folded by converters and are ignored;
- a batch norm whose input comes straight from a convolution or a linear layer is folded into it;
- pure views (``view``, ``reshape``, ``expand``, ``select``...) are counted separately from real ops,
  since torch inserts them where an exported graph has none, while transposes/permutes are data
  movement on an accelerator and count as ``layout``.

The same features describe whole timm models (the calibration rows of the iPhone estimate) and every
op of a search space (``build_op(key)``), so a cost model fitted on the first prices the second.
By default the module runs on the ``meta`` device: shapes only, no arithmetic, no memory.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

# work features (FLOPs or elements) and op counts, in a fixed order
WORK = ("conv_flops", "dwconv_flops", "linear_flops", "attn_flops",
        "norm_elems", "act_elems", "elt_elems", "softmax_elems", "pool_elems", "layout_elems", "reshape_elems",
        "weight_bytes", "act_bytes", "floor_ms")
BYTES_PER_ELEMENT = 2  # CoreML's ML Program runs fp16 on the Neural Engine
COUNTS = ("n_ops", "n_conv", "n_dwconv", "n_linear", "n_attn", "n_norm", "n_act", "n_elt", "n_softmax", "n_pool",
          "n_layout", "n_reshape")
FEATURES = WORK + COUNTS

_CONV = {"convolution", "_convolution", "conv2d", "conv1d", "mkldnn_convolution", "_slow_conv2d_forward",
         "thnn_conv2d", "convolution_overrideable", "cudnn_convolution"}
_MM = {"mm", "addmm", "bmm", "baddbmm", "mv", "dot", "addmv", "_addmm_activation"}
_SDPA = {"_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
         "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
         "_scaled_dot_product_attention_math", "_scaled_dot_product_fused_attention_overrideable"}
_BN = {"native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
       "batch_norm", "_batch_norm_impl_index", "cudnn_batch_norm"}
_NORM = {"native_layer_norm", "native_group_norm", "layer_norm", "group_norm", "_fused_rms_norm", "rms_norm",
         "instance_norm"}
_ACT = {"relu", "relu6", "gelu", "silu", "sigmoid", "hardswish", "hardsigmoid", "tanh", "hardtanh", "leaky_relu",
        "elu", "mish", "softplus", "clamp", "clamp_min", "clamp_max", "erf", "prelu", "_prelu_kernel", "glu",
        "threshold", "celu", "selu", "log_sigmoid_forward"}
_SOFTMAX = {"_softmax", "softmax", "_log_softmax", "log_softmax", "_safe_softmax"}
_WINDOW_POOL = {"avg_pool2d", "max_pool2d", "max_pool2d_with_indices", "avg_pool1d", "max_pool1d",
                "_mkldnn_avg_pool2d"}
_GLOBAL_POOL = {"adaptive_avg_pool2d", "_adaptive_avg_pool2d", "adaptive_max_pool2d", "mean", "sum", "amax",
                "amin", "max", "min", "var", "var_mean", "std", "logsumexp", "norm", "linalg_vector_norm"}
_ELT = {"add", "sub", "mul", "div", "neg", "pow", "sqrt", "rsqrt", "exp", "log", "abs", "where", "masked_fill",
        "addcmul", "addcdiv", "lerp", "reciprocal", "maximum", "minimum", "sign", "floor", "ceil", "round",
        "eq", "ne", "lt", "gt", "le", "ge", "fill", "zero", "sin", "cos", "square", "rsub", "_to_copy",
        "fmod", "remainder", "bitwise_and", "logical_and", "logical_not"}
_LAYOUT = {"permute", "transpose", "t", "cat", "stack", "constant_pad_nd", "pad", "reflection_pad2d",
           "replication_pad2d", "index", "index_select", "gather", "roll", "flip", "pixel_shuffle",
           "pixel_unshuffle", "im2col", "col2im", "upsample_nearest2d", "upsample_bilinear2d", "_upsample_bilinear2d_aa",
           "grid_sampler_2d", "repeat", "tile", "scatter", "index_put", "narrow_copy", "unfold_copy", "diagonal_copy"}
_VIEW = {"view", "_unsafe_view", "reshape", "flatten", "unflatten", "unsqueeze", "squeeze", "expand", "alias",
         "split", "split_with_sizes", "unbind", "select", "slice", "chunk", "narrow", "detach", "as_strided",
         "view_as", "reshape_as", "expand_as", "lift_fresh", "unfold", "_reshape_alias", "movedim"}
# torch memory artefacts with no counterpart in an exported graph
_IGNORE = {"clone", "contiguous", "copy_", "copy", "empty_like", "empty", "zeros_like", "ones_like",
           "new_empty", "new_zeros", "new_ones", "full_like", "_local_scalar_dense", "size", "stride",
           "sym_size", "sym_stride", "is_same_size", "dropout", "native_dropout", "_assert_async"}


_COMPUTE = ("conv_flops", "dwconv_flops", "linear_flops", "attn_flops")


def compute_flops(f: dict[str, float]) -> float:
    """Convolution, linear and attention FLOPs of a feature dict (elementwise work left out)."""
    return float(sum(f.get(k, 0.0) for k in _COMPUTE))

# --------------------------------------------------------------------------- the A14's roofline
# Apple, "Apple unveils all-new iPad Air with A14 Bionic" (press release, 15 Sep 2020): the A14 Neural
# Engine "is capable of performing up to 11 trillion operations per second".
PEAK_OPS_PER_S = 11e12
# iPhone 12 memory: LPDDR4X-4266 on a 64-bit bus (4 x 16-bit channels; AnandTech, "The Apple A14 SoC",
# and TechInsights' iPhone 12 teardown list LPDDR4X): 4266e6 transfers/s x 8 bytes = 34.1 GB/s.
DRAM_BYTES_PER_S = 4266e6 * 8


def roofline_ms(flops: float, weight_bytes: float) -> float:
    """The least time one op can take on the A14: its FLOPs at the Neural Engine's peak or its constant
    bytes (weights) streamed from DRAM, whichever is longer. Activations are left out of the floor: small
    maps stay in on-chip memory, so their DRAM traffic is no bound."""
    return 1e3 * max(flops / PEAK_OPS_PER_S, weight_bytes / DRAM_BYTES_PER_S)


def _name(func) -> str:
    name = func.overloadpacket.__name__ if hasattr(func, "overloadpacket") else str(func)
    return name.rstrip("_") if name.endswith("_") and not name.startswith("_") else name


class FeatureRecorder(TorchDispatchMode):
    """Records features of every aten op that depends on a tensor marked with :meth:`mark`."""

    def __init__(self):
        super().__init__()
        self.f = dict.fromkeys(FEATURES, 0.0)
        self.unknown: dict[str, int] = {}
        self._live = WeakIdKeyDictionary()  # tensor -> kind of the op that produced it

    def mark(self, tree: Any) -> None:
        for t in tree_leaves(tree):
            if isinstance(t, torch.Tensor):
                self._live[t] = "input"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        ins = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        live_ins = [t for t in ins if t in self._live]
        if not live_ins:
            return out
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        before = {k: self.f[k] for k in _COMPUTE + ("n_ops",)}
        kind = self._record(_name(func), args, kwargs, ins, live_ins, outs)
        if self.f["n_ops"] > before["n_ops"]:  # a real op (not a view, not folded): what it moves
            self._traffic(ins, live_ins, outs, sum(self.f[k] - before[k] for k in _COMPUTE))
        for t in outs:
            self._live[t] = kind
        return out

    def _traffic(self, ins, live_ins, outs, flops: float) -> None:
        """Bytes one real op moves at fp16: constant tensors it reads (weights, biases, precomputed
        attention biases) and the activations it reads and writes; and its roofline floor
        (:func:`roofline_ms`) from those bytes and its FLOPs."""
        live = {id(t) for t in live_ins}
        w = sum(t.numel() for t in ins if id(t) not in live and t.dim() > 0) * BYTES_PER_ELEMENT
        a = (sum(t.numel() for t in live_ins) + sum(t.numel() for t in outs)) * BYTES_PER_ELEMENT
        self.f["weight_bytes"] += w
        self.f["act_bytes"] += a
        self.f["floor_ms"] += roofline_ms(flops, w)

    # ------------------------------------------------------------------------------------------------
    def _add(self, count: str, work: str | None = None, amount: float = 0.0, real: bool = True) -> None:
        self.f[count] += 1
        if real:
            self.f["n_ops"] += 1
        if work:
            self.f[work] += float(amount)

    def _record(self, name: str, args, kwargs, ins, live_ins, outs) -> str:
        """Add the features of one aten op ``name``; returns the kind of what it produced (for folding and views)."""
        o = outs[0].numel() if outs else 0
        producer = self._live.get(live_ins[0], "input")
        if name in _CONV:
            return self._conv(args, kwargs, o)
        if name in _MM:
            return self._matmul(args, o)
        if name in _SDPA or name == "scaled_dot_product_attention":
            return self._attention(args)
        if name in _BN:
            if producer in ("conv", "linear"):
                return producer  # folded into the preceding conv / linear
            self._add("n_elt", "elt_elems", o)
            return "elt"
        for names, count, work, kind in ((_NORM, "n_norm", "norm_elems", "norm"), (_ACT, "n_act", "act_elems", "act"),
                                         (_SOFTMAX, "n_softmax", "softmax_elems", "softmax")):
            if name in names:
                self._add(count, work, o)
                return kind
        if name in _WINDOW_POOL:
            return self._window_pool(args, kwargs, o)
        if name in _GLOBAL_POOL:
            self._add("n_pool", "pool_elems", max(t.numel() for t in live_ins))
            return "pool"
        if name in _ELT:
            self._add("n_elt", "elt_elems", max([o] + [t.numel() for t in ins]))
            return "elt"
        return self._movement(name, ins, live_ins, outs, o, producer)

    def _conv(self, args, kwargs, o: int) -> str:
        x, w = args[0], args[1]
        groups = int(args[8]) if len(args) > 8 else int(kwargs.get("groups", 1))
        transposed = bool(args[6]) if len(args) > 6 else False
        k = math.prod(w.shape[2:])
        flops = 2 * (x.numel() if transposed else o) * w.shape[1] * k
        if groups > 1 and groups == x.shape[1]:
            self._add("n_dwconv", "dwconv_flops", flops)
        else:
            self._add("n_conv", "conv_flops", flops)
        return "conv"

    def _matmul(self, args, o: int) -> str:
        a, b = [t for t in args if isinstance(t, torch.Tensor)][-2:]
        flops = 2 * o * a.shape[-1]
        both_live = sum(t in self._live for t in (a, b)) == 2
        if both_live:  # activation x activation: attention-style batched matmul
            self._add("n_attn", "attn_flops", flops)
            return "attn"
        self._add("n_linear", "linear_flops", flops)
        return "linear"

    def _attention(self, args) -> str:
        """A fused scaled-dot-product attention: counted as its two matmuls and its softmax."""
        q, k, v = args[0], args[1], args[2]
        scores = q.numel() // q.shape[-1] * k.shape[-2]
        self._add("n_attn", "attn_flops", 2 * scores * (q.shape[-1] + v.shape[-1]))
        self.f["n_attn"] += 1
        self.f["n_ops"] += 1
        self._add("n_softmax", "softmax_elems", scores)
        return "attn"

    def _window_pool(self, args, kwargs, o: int) -> str:
        ks = args[1] if len(args) > 1 else kwargs.get("kernel_size", 1)
        area = math.prod(ks) if isinstance(ks, (list, tuple)) else int(ks) ** 2
        if isinstance(ks, (list, tuple)) and len(ks) == 1:
            area = int(ks[0]) ** 2
        self._add("n_pool", "pool_elems", o * area)
        return "pool"

    def _movement(self, name: str, ins, live_ins, outs, o: int, producer: str) -> str:
        """Layout ops, views, torch artefacts, and (as elementwise) ops not recognised."""
        if name in _LAYOUT:
            if name in ("permute", "transpose", "t") and _trivial_permute(live_ins[0], outs[0]):
                self._add("n_reshape", "reshape_elems", o, real=False)
                return producer
            self._add("n_layout", "layout_elems", o)
            return "layout"
        if name in _VIEW:
            self._add("n_reshape", "reshape_elems", o, real=False)
            return producer
        if name in _IGNORE:
            return producer
        self.unknown[name] = self.unknown.get(name, 0) + 1
        self._add("n_elt", "elt_elems", max([o] + [t.numel() for t in ins]))
        return "elt"


def _trivial_permute(x: torch.Tensor, y: torch.Tensor) -> bool:
    """A permute that only moves size-1 dims is a reshape, not data movement."""
    return [s for s in x.shape if s != 1] == [s for s in y.shape if s != 1]


def op_features(module: nn.Module, example_input: Any, *, device: str | torch.device = "meta",
                return_unknown: bool = False) -> dict[str, float] | tuple[dict[str, float], dict[str, int]]:
    """Features of one forward pass of ``module`` (in eval mode) on ``example_input``.

    The module is copied and moved to ``device`` (``meta`` by default: shapes only); the original is not
    touched. With ``return_unknown`` also returns the aten ops it did not recognise (counted as elementwise).
    """
    dev = torch.device(device)
    m = copy.deepcopy(module).eval().to(dev)
    x = _to(example_input, dev)
    rec = FeatureRecorder()
    rec.mark(x)
    with torch.no_grad(), rec:
        m(*x) if isinstance(x, tuple) else m(x)
    return (rec.f, rec.unknown) if return_unknown else rec.f


def model_features(model: nn.Module, input_size: tuple[int, ...], **kw) -> dict[str, float]:
    """Features of a whole image model at ``input_size`` = (C, H, W), batch 1."""
    return op_features(model, torch.zeros((1, *input_size)), **kw)


def add_features(*fs: dict[str, float]) -> dict[str, float]:
    total = dict.fromkeys(FEATURES, 0.0)
    for f in fs:
        for k in FEATURES:
            total[k] += f.get(k, 0.0)
    return total


def _to(x: Any, dev: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(dev)
    if isinstance(x, (tuple, list)):
        return tuple(_to(t, dev) for t in x)
    return x
