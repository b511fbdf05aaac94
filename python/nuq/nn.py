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
their forward pass (weight_norm's, spectral_norm's); a warning names them, and the layers of other
types that hold weights (Conv1d, Embedding, LSTM, ...), and says how many of the model's weights
stay float. A swapped layer whose weight is tied to a parameter that stays float (an LM head tied to
its embedding) gets codes of its own, with a warning: the tie is broken.

A parent that reads a swapped layer's weight itself gets the QuantizedTensor. PyTorch's functions
refuse it in its ``__torch_function__`` with a TypeError naming the function (TransformerEncoderLayer's
inference fast path then takes the layers' forward passes); its shape, ``size()``, ``numel()``,
``dim()`` and ``device`` answer as a tensor's would (device: where its values are dequantized, the
device of the weights quantized); other tensor attributes (``.T``, ``.to()``, ``.float()``, ...)
raise a TypeError (an AttributeError too) that says it holds packed codes and to take
``q.dequantize()``. Its ``dtype`` is nuq's name of the dtype quantized ("F32"), not a torch dtype
(it is the QuantizedTensor's, read by ``dequantize("source")``): a parent's
``x.to(layer.weight.dtype)`` fails in torch's words ("Invalid device string: 'F32'").

On the CPU the products run on ``nuq.get_num_threads()`` threads: OpenMP's count, which PyTorch sets
(so, where the two share an OpenMP runtime, the count torch's own layers run on), unless
``nuq.set_num_threads`` chose one (README, "From Python"). Between torch's layers on few cores, more
threads pay only where both libraries' idle threads let go of their cores at once:
``OMP_WAIT_POLICY=passive OPENBLAS_THREAD_TIMEOUT=4`` in the environment before Python starts.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F

from . import qgemm
from ._nn_models import (_float_left, _layers, _matrices, _other_type_left, _owner, _said_of, _same_codes, _swap,
                         _ties_broken, _warn_of_ties, _weights, _why_not_swapped)
from ._nuq import Codebook, QuantizedTensor, devices
from ._quantize import _cuda_backend
from ._state_dicts import (_listed, _skip_patterns, _skipped_by, _vector_like, _warn_of_unmatched,
                           dequantize_state_dict, quantize_state_dict)


def _check_device(device, what: str, group_size: int = 0) -> None:
    """device one of the three, and "cuda" only for codes a GPU multiplies (not grouped ones) where
    nuq has one: refused when asked, not at the first forward pass."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"{what}: device {device!r}; 'auto', 'cpu' or 'cuda'")
    if device == "cuda" and group_size:
        raise ValueError(f"{what}: grouped codes (group_size {group_size}) are multiplied on the CPU; "
                         "device='auto' takes a CUDA input's rows there and back")
    if device == "cuda" and not _cuda_backend():
        raise ValueError(f"{what}: device='cuda', and nuq has no CUDA device here (its devices: "
                         f"{', '.join(devices())}; built without its CUDA backend, or no GPU visible); 'auto' or 'cpu'")


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
        _check_device(device, what, weight.group_size)
        self.device = device

    def _check_input(self, x) -> None:
        """Before anything is done with x (F.unfold has no integer kernels: torch's own error would name im2col)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__}: input of type {type(x).__name__}; a torch tensor is multiplied")
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__}: input of dtype {x.dtype}; a floating tensor is multiplied")

    def _product(self, x: torch.Tensor) -> torch.Tensor:
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
        # The design's width, and the storage's where it is wider (codes are stored in 1, 2, 4, 8 or 16 bits).
        designed = q.codebook.bits if q.codebook is not None else q.bits
        codes = "codes" if designed == q.bits else f"(stored as {q.bits}-bit codes)"
        grouped = f", groups of {q.group_size}" if q.group_size else ""
        return f"{designed}-bit {method} {codes}, {q.normalisation}{grouped}, device={self.device!r}"


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
        self._check_input(x)
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"QuantizedLinear: input of shape {tuple(x.shape)}; its last dimension must be the "
                             f"layer's {self.in_features} inputs")
        return self._product(x)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                + self._describe())


def _pair(value, what: str) -> tuple:
    """Two ints of an int or two: numpy's integers as Python's (a torch.nn.Conv2d built from numpy
    sizes holds them, and torch takes them), never a bool."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"{what} {value!r}; an int or two ints")
    return tuple(int(v) for v in pair)


def _geometry(stride, padding, dilation, what: str) -> tuple:
    """(stride, padding, dilation) as QuantizedConv2d keeps them, or a ValueError said of `what`."""
    stride, dilation = _pair(stride, f"{what}: stride"), _pair(dilation, f"{what}: dilation")
    if isinstance(padding, str) and padding not in ("valid", "same"):
        raise ValueError(f"{what}: padding {padding!r}; numbers, 'valid' or 'same'")
    if padding == "same" and stride != (1, 1):
        raise ValueError(f"{what}: padding='same' needs stride 1, as torch.nn.Conv2d's does")
    padding = str(padding) if isinstance(padding, str) else _pair(padding, f"{what}: padding")
    if min(stride + dilation) < 1 or (not isinstance(padding, str) and min(padding) < 0):
        raise ValueError(f"{what}: stride {stride} and dilation {dilation} must be positive, padding {padding} "
                         "not negative")
    return stride, padding, dilation


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
        self.stride, self.padding, self.dilation = _geometry(stride, padding, dilation, "QuantizedConv2d")
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
        self._check_input(x)
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


def _quantized_layer(module, q: QuantizedTensor, device: str):
    if q.group_size and device == "cuda":  # quantized on the GPU; multiplied where grouped codes are
        device = "auto"
    if isinstance(module, torch.nn.Linear):
        layer = QuantizedLinear(q, module.bias, device=device)
    else:
        layer = QuantizedConv2d(q, module.bias, stride=module.stride, padding=module.padding,
                                dilation=module.dilation, device=device)
    return layer.train(module.training)


def _layer_for(caller: str, name: str, module, q: QuantizedTensor, device: str):
    """The quantized layer for `module`, a refusal said of `caller` and the layer (made for every layer
    before the first is swapped, so that a refusal leaves the model as it was)."""
    try:
        return _quantized_layer(module, q, device)
    except (TypeError, ValueError) as error:
        if type(error) not in (TypeError, ValueError):  # (a subclass may take other arguments: as it came)
            raise
        raise type(error)(f"{caller}: layer '{name}' ({type(module).__name__}): {error}") from error


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
    (grouped codes are multiplied on the CPU; "cuda" is refused where nuq has no CUDA device). Layers
    of other types holding weights (Conv1d, Embedding, LSTM, ...), subclasses, grouped and
    non-zero-padded convolutions, layers with hooks on their forward pass or a weight made by one
    (torch.nn.utils.weight_norm, spectral_norm), and layers kept by quantize_state_dict's rules are
    left as they are: one warning names them (those skip names aside) and counts the weights left
    float. A layer whose weight is tied to a parameter left float (an LM head tied to its embedding)
    is swapped and untied, with a warning. Every new layer is made before the first is swapped: what
    is refused (a wrong argument, a convolution torch could not run either) leaves the model as it was.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"quantize_modules: model must be a torch.nn.Module, not {type(model).__name__}")
    _check_device(device, "quantize_modules")
    patterns = _skip_patterns(skip, "quantize_modules")
    layers, left, others = {}, [], []  # others: the names of matrices held by layers of other types
    for module, names in _layers(model).values():
        why = _why_not_swapped(module)
        if why is None and names == [""]:
            raise ValueError("quantize_modules: the model is itself a Linear or Conv2d layer; wrap it (e.g. in "
                             "torch.nn.Sequential) so that it can be swapped, or use nuq.quantize on its weight")
        if why is None:
            if isinstance(module, torch.nn.Conv2d):  # refused before anything is quantized or swapped
                _geometry(module.stride, module.padding, module.dilation,
                          f"quantize_modules: layer '{names[0]}' (Conv2d)")
            layers[names[0]] = (module, [n for n in names if n])
        elif why:
            left.append(f"{names[0]} ({why})")
        else:
            others += [k for k, _ in _matrices(module, names)]
            item = _other_type_left(module, names, patterns)
            left += [item] if item else []
    first_of, keys_of = {}, {}  # a weight -> the first layer holding it; that layer -> every key reaching it
    for name, (module, names) in layers.items():
        first = first_of.setdefault(id(module.weight), name)  # a tied weight: quantized once, under that name
        keys_of.setdefault(first, []).extend(f"{n}.weight" for n in names)
    if not first_of:
        raise ValueError("quantize_modules: the model has no torch.nn.Linear or torch.nn.Conv2d layer to quantize")
    every = {first: layers[first][0].weight.detach() for first in keys_of}
    # skip names a weight by any of its names (a shared layer's, each tied layer's): left, it is left everywhere.
    _warn_of_unmatched(patterns, [k for keys in keys_of.values() for k in keys] + others, "quantize_modules",
                       stacklevel=2)
    skipped = {first for first, keys in keys_of.items() if any(_skipped_by(patterns, k, every[first]) for k in keys)}
    weights = {f"{first}.weight": t for first, t in every.items() if first not in skipped}
    quantized = _said_of("quantize_modules", "quantize_state_dict", lambda: quantize_state_dict(
        weights, codebook, normalise=normalise, group_size=group_size, device=device, nonfinite=nonfinite,
        quantize_vectors=quantize_vectors))
    new, swapped = [], {}  # every new layer made before the first is swapped: a refusal swaps nothing
    for name, (module, names) in layers.items():
        first = first_of[id(module.weight)]
        q = quantized.get(f"{first}.weight")
        if isinstance(q, QuantizedTensor):
            new.append((module, names, _layer_for("quantize_modules", name, module, q, device)))
            swapped.update((n, q) for n in names)
        elif first not in skipped and every[first].numel() == 0:
            left.append(f"{name} (a weight of shape {tuple(every[first].shape)}, without elements)")
        elif first not in skipped and _vector_like(f"{first}.weight", every[first]) and not quantize_vectors:
            left.append(f"{name} (a weight of shape {tuple(every[first].shape)}, one dimension above 1, kept as "
                        "nuq quantize keeps vectors; quantize_vectors=True quantizes it)")
    broken = _ties_broken(model, _weights(model), [(module, names) for module, names, _ in new])
    for module, names, layer in new:
        _swap(model, names, layer)
    if left:
        warnings.warn(f"quantize_modules: left as they are: {_listed(left)}; "
                      f"{_float_left(model, list(swapped.values()))}", stacklevel=2)
    _warn_of_ties("quantize_modules", broken, stacklevel=2)
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
    must have the same codes under each; a swapped layer whose weight is tied to a parameter loaded
    float is untied, with a warning. device="cuda" is refused where nuq has no CUDA device. What is
    refused before loading swaps nothing (every new layer is made before the first is swapped); if
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
    # Every new layer made before the first is swapped: a refusal swaps nothing.
    new = [(module, names, q, _layer_for("load_quantized", names[0], module, q, device))
           for module, names, q in plan.values()]
    restored = _said_of("load_quantized", "dequantize_state_dict", lambda: dequantize_state_dict(
        {k: v for k, v in state_dict.items() if k not in as_codes}, as_torch=True))
    owners = {k: _owner(named, k) for k, v in state_dict.items() if isinstance(v, QuantizedTensor) and k not in as_codes}
    dequantized = [f"{k} ({type(owner).__name__})" for k, owner in owners.items() if owner is not None]
    if dequantized:
        warnings.warn("load_quantized: codes loaded dequantized into float parameters (not a Linear or Conv2d layer "
                      "nuq.nn multiplies by codes): " + _listed(dequantized), stacklevel=2)
    final = {k: restored.get(k, v) for k, v in state_dict.items()}
    broken = _ties_broken(model, _weights(model), [(module, names) for module, names, _, _ in new])
    swapped = []
    for module, names, q, layer in new:
        _swap(model, names, layer)
        swapped.append((module, names))
        final.update((f"{n}.weight", q) for n in names if f"{n}.weight" in final)  # one layer, one set of codes
    try:
        result = model.load_state_dict(final, strict=strict)
    except BaseException:
        for module, names in swapped:  # the float layers back, as the caller had them
            _swap(model, names, module)
        raise
    _warn_of_ties("load_quantized", broken, stacklevel=2)
    return result


__all__ = ["QuantizedLinear", "QuantizedConv2d", "quantize_modules", "load_quantized"]
