"""nuq.nn: PyTorch modules that multiply by packed codes, and a model's layers swapped for them.

``quantize_modules(model, codebook)`` quantizes the weights of a model's ``torch.nn.Linear`` and
``torch.nn.Conv2d`` layers as ``quantize_state_dict`` quantizes a state dict of those weights (the
same tensors kept, one normalisation over all of them) and puts a ``QuantizedLinear`` or
``QuantizedConv2d`` in each one's place: its forward pass is ``nuq.qgemm`` on the packed codes
where the input lies (the CPU's table look-up or decoded panels; a CUDA input on its device), in
float32, no float weight is kept, and the biases stay as they were. ``model.state_dict()`` then
holds each layer's QuantizedTensor under ``<layer>.weight``: ``nuq.save`` writes it as ``nuq
quantize`` writes a checkpoint, and ``load_quantized`` puts a file's codes back into a fresh model
of the same architecture.

Gradients flow to the inputs (through the dequantized weights, made again at every backward pass)
and to the biases, so layers around the quantized ones can be trained; the codes are fixed.
Only layers of exactly these two types are swapped: a subclass may have a forward pass of its own,
and some are read by their parents (MultiheadAttention's out_proj weight is used directly), so they
are left as they are, and so are grouped or non-zero-padded convolutions and layers with hooks on
their forward pass (weight_norm's, spectral_norm's); a warning names them. A
parent that reads a swapped layer's weight itself is turned away by the QuantizedTensor's
``__torch_function__`` (TransformerEncoderLayer's inference fast path then takes the layers'
forward passes; another parent gets a TypeError naming the function).

On the CPU the products run on ``nuq.get_num_threads()`` threads: OpenMP's count, which PyTorch sets
(so, where the two share an OpenMP runtime, the count torch's own layers run on), unless
``nuq.set_num_threads`` chose one (README, "From Python"). Between torch's layers on few cores, more
threads pay only where both libraries' idle threads let go of their cores at once:
``OMP_WAIT_POLICY=passive OPENBLAS_THREAD_TIMEOUT=4`` in the environment before Python starts.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F

from . import qgemm
from ._nuq import Codebook, QuantizedTensor
from ._state_dicts import (_listed, _skip_patterns, _skipped_by, _vector_like, _warn_of_unmatched,
                           dequantize_state_dict, quantize_state_dict)


def _check_device(device, what: str) -> None:
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"{what}: device {device!r}; 'auto', 'cpu' or 'cuda'")


class _CodesProduct(torch.autograd.Function):
    """y = x @ W.T + bias from W's codes; backward gives x's gradient through the dequantized W and
    the bias's as its sum (the codes have none)."""

    @staticmethod
    def forward(ctx, x, bias, q, device):
        ctx.q = q
        ctx.x_dtype = x.dtype
        ctx.bias_shape = None if bias is None else bias.shape
        return qgemm(x, q, bias, device=device)  # float32, on x's device

    @staticmethod
    def backward(ctx, grad_y):
        grad_x = grad_bias = None
        if ctx.needs_input_grad[0]:
            w = ctx.q.dequantize()
            w = (w if isinstance(w, torch.Tensor) else torch.from_numpy(np.asarray(w)))
            w = w.reshape(ctx.q.rows, ctx.q.cols).to(device=grad_y.device, dtype=torch.float32)
            grad_x = (grad_y.float() @ w).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            grad_bias = grad_y.reshape(-1, ctx.q.rows).sum(0).reshape(ctx.bias_shape)
        return grad_x, grad_bias, None, None


def _bias_parameter(bias, outputs: int, what: str) -> Optional[torch.nn.Parameter]:
    if bias is None:
        return None
    if isinstance(bias, torch.nn.Parameter):
        parameter = bias
    else:
        t = bias if isinstance(bias, torch.Tensor) else torch.from_numpy(np.array(bias, dtype=np.float32))
        parameter = torch.nn.Parameter(t.detach(), requires_grad=t.is_floating_point())
    if tuple(parameter.shape) != (outputs,):
        raise ValueError(f"{what}: bias of shape {tuple(parameter.shape)}, not the weights' {outputs} outputs")
    return parameter


class _CodesModule(torch.nn.Module):
    """What both layers share: the QuantizedTensor as ``weight`` (not a parameter: it has no float
    values), kept in the state dict under ``<prefix>weight`` and taken from one on loading."""

    def _check_weight(self, weight, rank: int, what: str) -> QuantizedTensor:
        if not isinstance(weight, QuantizedTensor):
            raise TypeError(f"{what}: weight must be a nuq.QuantizedTensor (from nuq.quantize or nuq.load), not "
                            f"{type(weight).__name__}")
        if len(weight.shape) != rank:
            raise ValueError(f"{what}: weight of shape {tuple(weight.shape)}; a {type(self).__name__} takes a "
                             f"{rank}-dimensional one")
        return weight

    def _set_device(self, device: str, weight: QuantizedTensor, what: str) -> None:
        _check_device(device, what)
        if device == "cuda" and weight.group_size:
            raise ValueError(f"{what}: grouped codes (group_size {weight.group_size}) are multiplied on the CPU; "
                             "device='auto' takes a CUDA input's rows there and back")
        self.device = device

    def _product(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__}: input of dtype {x.dtype}; a floating tensor is multiplied")
        # "auto" means where the input is: a CPU model stays on the CPU on a machine with a GPU (qgemm's
        # "auto" would take a host input to device 0).
        device = "cpu" if self.device == "auto" and x.device.type == "cpu" else self.device
        y = _CodesProduct.apply(x, self.bias, self.weight, device)
        return y if y.dtype == x.dtype else y.to(x.dtype)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weight"] = self.weight

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        key = prefix + "weight"
        if key in unexpected_keys:
            unexpected_keys.remove(key)
        if key not in state_dict:
            missing_keys.append(key)
            return
        weight = state_dict[key]
        if not isinstance(weight, QuantizedTensor):
            error_msgs.append(f"{key}: a {type(self).__name__} holds packed codes, and the state dict has a "
                              f"{type(weight).__name__} (quantize it with nuq.nn.quantize_modules, or load a "
                              "float model's weights into the float layer)")
        elif tuple(weight.shape) != tuple(self.weight.shape):
            error_msgs.append(f"{key}: codes of shape {tuple(weight.shape)}, the layer's are "
                              f"{tuple(self.weight.shape)}")
        else:
            self.weight = weight

    def _describe(self) -> str:
        q = self.weight
        method = q.codebook.method if q.codebook is not None else "levels"
        grouped = f", groups of {q.group_size}" if q.group_size else ""
        return f"{q.bits}-bit {method} codes, {q.normalisation}{grouped}, device={self.device!r}"


class QuantizedLinear(_CodesModule):
    """A linear layer whose weight is packed codes: ``y = x @ W.T + bias`` by ``nuq.qgemm``.

    weight: a 2-D QuantizedTensor [out_features, in_features]; bias: None or out_features values
    (a Parameter is taken as it is). device: the backend ``qgemm`` uses: "auto" (the input's: a
    CUDA input on its GPU, a CPU input on the CPU), "cpu" or "cuda" (not for grouped codes, which
    are multiplied on the CPU). Inputs [..., in_features] of any floating dtype, multiplied in
    float32 (float64 inputs are rounded to it); the output has the input's dtype and device.
    """

    def __init__(self, weight: QuantizedTensor, bias=None, *, device: str = "auto"):
        super().__init__()
        self.weight = self._check_weight(weight, 2, "QuantizedLinear")
        self.in_features, self.out_features = weight.cols, weight.rows
        self.bias = _bias_parameter(bias, weight.rows, "QuantizedLinear")
        self._set_device(device, weight, "QuantizedLinear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"QuantizedLinear: input of shape {tuple(x.shape)}; its last dimension must be the "
                             f"layer's {self.in_features} inputs")
        return self._product(x)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                + self._describe())


def _pair(value, what: str) -> tuple:
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"QuantizedConv2d: {what} {value!r}; an int or two ints")
    return pair


class QuantizedConv2d(_CodesModule):
    """A 2-D convolution whose weight is packed codes: the input's patches (``F.unfold``, so memory
    for kernel_height·kernel_width copies of the input) times the [out_channels, in_channels·kh·kw]
    view of the codes by ``nuq.qgemm``. Zero padding as ``torch.nn.Conv2d``'s ``padding`` (numbers,
    "valid" or "same"), stride and dilation; one group.
    """

    def __init__(self, weight: QuantizedTensor, bias=None, *, stride=1, padding=0, dilation=1,
                 device: str = "auto"):
        super().__init__()
        self.weight = self._check_weight(weight, 4, "QuantizedConv2d")
        self.out_channels, self.in_channels = weight.shape[0], weight.shape[1]
        self.kernel_size = (weight.shape[2], weight.shape[3])
        self.stride, self.dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
        if isinstance(padding, str) and padding not in ("valid", "same"):
            raise ValueError(f"QuantizedConv2d: padding {padding!r}; numbers, 'valid' or 'same'")
        if padding == "same" and self.stride != (1, 1):
            raise ValueError("QuantizedConv2d: padding='same' needs stride 1, as torch.nn.Conv2d's does")
        self.padding = padding if isinstance(padding, str) else _pair(padding, "padding")
        if min(self.stride + self.dilation) < 1 or (not isinstance(self.padding, str) and min(self.padding) < 0):
            raise ValueError(f"QuantizedConv2d: stride {self.stride} and dilation {self.dilation} must be positive, "
                             f"padding {self.padding} not negative")
        self.bias = _bias_parameter(bias, weight.shape[0], "QuantizedConv2d")
        self._set_device(device, weight, "QuantizedConv2d")

    def _padded(self, x: torch.Tensor):
        """x padded as the layer pads (torch's "same" puts the odd element at the end) and the
        padding left for unfold."""
        if self.padding == "valid":
            return x, (0, 0)
        if self.padding != "same":
            return x, self.padding
        total = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
        if all(t % 2 == 0 for t in total):
            return x, (total[0] // 2, total[1] // 2)
        return F.pad(x, (total[1] // 2, total[1] - total[1] // 2, total[0] // 2, total[0] - total[0] // 2)), (0, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (3, 4) or x.shape[-3] != self.in_channels:
            raise ValueError(f"QuantizedConv2d: input of shape {tuple(x.shape)}; [N, {self.in_channels}, H, W] or "
                             f"[{self.in_channels}, H, W]")
        batched, given = x.dim() == 4, tuple(x.shape)
        x, padding = self._padded(x if batched else x.unsqueeze(0))
        (kh, kw), (dh, dw), (sh, sw) = self.kernel_size, self.dilation, self.stride
        out_h = (x.shape[2] + 2 * padding[0] - dh * (kh - 1) - 1) // sh + 1
        out_w = (x.shape[3] + 2 * padding[1] - dw * (kw - 1) - 1) // sw + 1
        if out_h < 1 or out_w < 1:
            raise ValueError(f"QuantizedConv2d: input of shape {given} is smaller than the {kh}x{kw} kernel "
                             f"(dilation {self.dilation}, padding {self.padding})")
        patches = F.unfold(x, self.kernel_size, dilation=self.dilation, padding=padding, stride=self.stride)
        y = self._product(patches.transpose(1, 2))  # [N, out_h·out_w, out_channels]
        y = y.transpose(1, 2).reshape(x.shape[0], self.out_channels, out_h, out_w)
        return y if batched else y.squeeze(0)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}, "
                + self._describe())


def _why_not_swapped(module) -> Optional[str]:
    """None for a layer nuq.nn swaps; otherwise why it is left as it is ('' for a module that is no
    Linear or Conv2d at all)."""
    if type(module) in (torch.nn.Linear, torch.nn.Conv2d):
        # weight_norm and spectral_norm (torch.nn.utils) make the weight from parameters of their own
        # in a forward pre-hook: the weight in hand may be out of date, and a swap would drop them.
        if not isinstance(module._parameters.get("weight"), torch.nn.Parameter):
            return "a weight made before each forward pass (weight_norm, spectral_norm), not a parameter"
        if (module._forward_pre_hooks or module._forward_hooks or module._backward_hooks
                or getattr(module, "_backward_pre_hooks", None)):  # (torch 2's)
            return "hooks on its forward pass, which the quantized layer would not run"
    if type(module) is torch.nn.Linear:
        return None
    if type(module) is torch.nn.Conv2d:
        if module.groups != 1:
            return f"a convolution of {module.groups} groups"
        if module.padding_mode != "zeros":
            return f"{module.padding_mode} padding"
        return None
    if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
        return f"a {type(module).__name__}, a subclass with a forward pass or users of its own"
    return ""


def _layers(model) -> dict:
    """{id(module): (module, [every name it is registered under])} in the model's order: a module
    shared by several parents (ALBERT's layers) is one layer, swapped under each of its names."""
    found = {}
    for name, module in model.named_modules(remove_duplicate=False):
        found.setdefault(id(module), (module, []))[1].append(name)
    return found


def _swap(model, names, new) -> None:
    for name in names:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _quantized_layer(module, q: QuantizedTensor, device: str):
    if q.group_size and device == "cuda":  # quantized on the GPU; multiplied where grouped codes are
        device = "auto"
    if isinstance(module, torch.nn.Linear):
        layer = QuantizedLinear(q, module.bias, device=device)
    else:
        layer = QuantizedConv2d(q, module.bias, stride=module.stride, padding=module.padding,
                                dilation=module.dilation, device=device)
    return layer.train(module.training)


def _said_of(caller: str, inner: str, call: Callable):
    """call(), its warnings and its ValueError said of `caller` instead of `inner` (the function it
    calls), the warnings before the error (a float64 model's warning explains why nothing was quantized)."""
    failure = None
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        try:
            result = call()
        except ValueError as error:
            failure = error
    def renamed(text: str) -> str:
        return f"{caller}:{text[len(inner) + 1:]}" if text.startswith(f"{inner}:") else text

    for warning in said:
        warnings.warn(renamed(str(warning.message)), warning.category, stacklevel=3)
    if failure is not None:
        raise ValueError(renamed(str(failure))) from None
    return result


def quantize_modules(model: torch.nn.Module, codebook: Codebook, *, skip: Any = None, normalise: Optional[str] = None,
                     group_size: Optional[int] = None, device: str = "auto", nonfinite: str = "error",
                     quantize_vectors: bool = False) -> dict:
    """Quantize the weights of `model`'s Linear and Conv2d layers with `codebook` and swap each such
    layer for a QuantizedLinear or QuantizedConv2d, in place. Returns {layer name: QuantizedTensor}.

    The weights are quantized by ``quantize_state_dict`` as the state dict {"<layer>.weight": ...}
    of these layers alone, with its options: skip (globs, compiled expressions or a callable
    skip(name, tensor), as there: a layer whose weight it names is left as it is), normalise
    (default "global": one mean and standard deviation over the weights of the layers swapped,
    Algorithm 1; ``quantize_state_dict`` of the whole state dict, and ``nuq quantize``, would also
    count embeddings and the other layers' weights), group_size, nonfinite, quantize_vectors
    (a weight of one dimension above 1, as Linear(16, 1)'s, is kept without it). A weight shared by
    several layers (tied), and a layer registered under several names, is quantized once and shared.
    device is where the weights are quantized ("auto": where they lie) and the new layers' backend
    (grouped codes are multiplied on the CPU). Layers of other types, subclasses, grouped and
    non-zero-padded convolutions, layers with hooks on their forward pass or a weight made by one
    (torch.nn.utils.weight_norm, spectral_norm), and layers kept by quantize_state_dict's rules are
    left as they are (named in a warning).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"quantize_modules: model must be a torch.nn.Module, not {type(model).__name__}")
    _check_device(device, "quantize_modules")
    layers, left = {}, []
    for module, names in _layers(model).values():
        why = _why_not_swapped(module)
        if why is None and names == [""]:
            raise ValueError("quantize_modules: the model is itself a Linear or Conv2d layer; wrap it (e.g. in "
                             "torch.nn.Sequential) so that it can be swapped, or use nuq.quantize on its weight")
        if why is None:
            layers[names[0]] = (module, [n for n in names if n])
        elif why:
            left.append(f"{names[0]} ({why})")
    first_of, keys_of = {}, {}  # a weight -> the first layer holding it; that layer -> every key reaching it
    for name, (module, names) in layers.items():
        first = first_of.setdefault(id(module.weight), name)  # a tied weight: quantized once, under that name
        keys_of.setdefault(first, []).extend(f"{n}.weight" for n in names)
    if not first_of:
        raise ValueError("quantize_modules: the model has no torch.nn.Linear or torch.nn.Conv2d layer to quantize")
    every = {first: layers[first][0].weight.detach() for first in keys_of}
    # skip names a weight by any of its names (a shared layer's, each tied layer's): left, it is left everywhere.
    patterns = _skip_patterns(skip)
    _warn_of_unmatched(patterns, [k for keys in keys_of.values() for k in keys], "quantize_modules", stacklevel=2)
    skipped = {first for first, keys in keys_of.items() if any(_skipped_by(patterns, k, every[first]) for k in keys)}
    weights = {f"{first}.weight": t for first, t in every.items() if first not in skipped}
    quantized = _said_of("quantize_modules", "quantize_state_dict", lambda: quantize_state_dict(
        weights, codebook, normalise=normalise, group_size=group_size, device=device, nonfinite=nonfinite,
        quantize_vectors=quantize_vectors))
    swapped = {}
    for name, (module, names) in layers.items():
        first = first_of[id(module.weight)]
        q = quantized.get(f"{first}.weight")
        if isinstance(q, QuantizedTensor):
            _swap(model, names, _quantized_layer(module, q, device))
            swapped.update((n, q) for n in names)
        elif first not in skipped and every[first].numel() == 0:
            left.append(f"{name} (a weight of shape {tuple(every[first].shape)}, without elements)")
        elif first not in skipped and _vector_like(f"{first}.weight", every[first]) and not quantize_vectors:
            left.append(f"{name} (a weight of shape {tuple(every[first].shape)}, one dimension above 1, kept as "
                        "nuq quantize keeps vectors; quantize_vectors=True quantizes it)")
    if left:
        warnings.warn(f"quantize_modules: left as they are: {_listed(left)}", stacklevel=2)
    return swapped


def load_quantized(model: torch.nn.Module, state_dict: Mapping[str, Any], *, strict: bool = True,
                   device: str = "auto"):
    """Put a quantized state dict into `model`, a model of the same architecture: ``nuq.load`` of a
    file ``nuq.save`` wrote from a model that ``quantize_modules`` quantized, or of ``nuq quantize``'s
    output of its float checkpoint. Every Linear or Conv2d layer whose ``<layer>.weight`` is a
    QuantizedTensor becomes a QuantizedLinear or QuantizedConv2d holding it (device as the layers'),
    the codes of any other parameter (an embedding, attention's in_proj_weight, a bias quantized
    with --quantize-vectors) are loaded dequantized, with a warning, and everything is loaded by
    ``model.load_state_dict(..., strict)`` (numpy arrays as tensors, 8-bit floats widened): with
    strict=False, keys the model lacks are only reported. A layer registered under several names
    must have the same codes under each. What is refused before loading swaps nothing; if
    load_state_dict fails, the swapped layers are put back (what it copied before failing stays
    copied, as with load_state_dict alone). Returns what load_state_dict returns."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"load_quantized: model must be a torch.nn.Module, not {type(model).__name__}")
    if not hasattr(state_dict, "items"):
        raise TypeError(f"load_quantized: a dict of name -> tensor, not {type(state_dict).__name__}")
    _check_device(device, "load_quantized")
    layers = _layers(model)
    named = {name: module for module, names in layers.values() for name in names}
    plan, as_codes = {}, set()  # id(layer) -> (module, names, codes); keys that stay codes
    for key, value in state_dict.items():
        if not isinstance(value, QuantizedTensor) or not key.endswith(".weight"):
            continue
        module = named.get(key[:-len(".weight")])
        if module is None or not (isinstance(module, (QuantizedLinear, QuantizedConv2d)) or
                                  _why_not_swapped(module) is None):
            continue  # dequantized for the parameter of that name, or reported as no key of the model
        if not isinstance(module, (QuantizedLinear, QuantizedConv2d)):  # (a quantized one: load_state_dict's)
            plan.setdefault(id(module), (module, layers[id(module)][1], value))
        expected = tuple(module.weight.shape)
        if tuple(value.shape) != expected:
            raise ValueError(f"load_quantized: '{key}': codes of shape {tuple(value.shape)}, the layer's weight is "
                             f"{expected}")
        as_codes.add(key)
    for module, names, q in plan.values():  # a layer under several names: the same codes under each
        for other in (f"{n}.weight" for n in names):
            value = state_dict.get(other, q)
            if not (value is q or (isinstance(value, QuantizedTensor) and _same_codes(value, q))):
                raise ValueError(f"load_quantized: '{other}' and '{names[0]}.weight' name one layer of the model "
                                 "(registered under both names), and the state dict holds other values under each")
    # A fresh model's tied layers get one QuantizedTensor where the file holds the same codes twice.
    shared = {}
    for layer_id, (module, names, q) in plan.items():
        first = shared.setdefault(id(module.weight), q)
        if first is not q and _same_codes(first, q):
            plan[layer_id] = (module, names, first)
    restored = _said_of("load_quantized", "dequantize_state_dict", lambda: dequantize_state_dict(
        {k: v for k, v in state_dict.items() if k not in as_codes}, as_torch=True))
    owners = {k: _owner(named, k) for k, v in state_dict.items() if isinstance(v, QuantizedTensor) and k not in as_codes}
    dequantized = [f"{k} ({type(owner).__name__})" for k, owner in owners.items() if owner is not None]
    if dequantized:
        warnings.warn("load_quantized: codes loaded dequantized into float parameters (not a Linear or Conv2d layer "
                      "nuq.nn multiplies by codes): " + _listed(dequantized), stacklevel=2)
    final = {k: restored.get(k, v) for k, v in state_dict.items()}
    swapped = []
    for module, names, q in plan.values():
        _swap(model, names, _quantized_layer(module, q, device))
        swapped.append((module, names))
        final.update((f"{n}.weight", q) for n in names if f"{n}.weight" in final)  # one layer, one set of codes
    try:
        return model.load_state_dict(final, strict=strict)
    except BaseException:
        for module, names in swapped:  # the float layers back, as the caller had them
            _swap(model, names, module)
        raise


def _same_codes(a: QuantizedTensor, b: QuantizedTensor) -> bool:
    return a is b or (tuple(a.shape) == tuple(b.shape) and a.group_size == b.group_size and
                      np.array_equal(a.codes, b.codes) and np.array_equal(a.levels, b.levels) and
                      (a.scales is None) == (b.scales is None) and
                      (a.scales is None or np.array_equal(a.scales, b.scales)))


def _owner(named: dict, key: str):
    """The module that holds parameter or buffer `key`, or None where the model has none of that name."""
    module_name, _, attribute = key.rpartition(".")
    module = named.get(module_name)
    if module is None:
        return None
    held = {name for name, _ in module.named_parameters(recurse=False)} | {
        name for name, _ in module.named_buffers(recurse=False)}
    return module if attribute in held else None


__all__ = ["QuantizedLinear", "QuantizedConv2d", "quantize_modules", "load_quantized"]
