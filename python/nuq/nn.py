"""nuq.nn: PyTorch modules that multiply by packed codes, and a model's layers swapped for them.

``quantize_modules(model, codebook)`` quantizes the weights of a model's ``torch.nn.Linear`` and
``torch.nn.Conv2d`` layers as ``quantize_state_dict`` quantizes a state dict (the same tensors
kept, the same codes, one normalisation over all of them) and puts a ``QuantizedLinear`` or
``QuantizedConv2d`` in each one's place: its forward pass is ``nuq.qgemm`` on the packed codes (the
CPU's table look-up or decoded panels; a CUDA input on its device), no float weight is kept, and the
biases stay as they were. ``model.state_dict()`` then holds each layer's QuantizedTensor under
``<layer>.weight``: ``nuq.save`` writes it as ``nuq quantize`` writes a checkpoint, and
``load_quantized`` puts a file's codes back into a fresh model of the same architecture.

Gradients flow to the inputs (through the dequantized weights, made again at every backward pass)
and to the biases, so layers around the quantized ones can be trained; the codes are fixed.
Only layers of exactly these two types are swapped: a subclass may have a forward pass of its own,
and some are read by their parents (MultiheadAttention's out_proj weight is used directly), so they
are left as they are, and so are grouped or non-zero-padded convolutions; a warning names them.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F

from . import qgemm
from ._nuq import Codebook, QuantizedTensor
from ._state_dicts import quantize_state_dict


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

    def _product(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__}: input of dtype {x.dtype}; a floating tensor is multiplied")
        y = _CodesProduct.apply(x, self.bias, self.weight, self.device)
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
    (a Parameter is taken as it is). device: the backend ``qgemm`` uses ("auto", "cpu" or "cuda").
    Inputs [..., in_features] of any floating dtype; the output has the input's dtype and device.
    """

    def __init__(self, weight: QuantizedTensor, bias=None, *, device: str = "auto"):
        super().__init__()
        self.weight = self._check_weight(weight, 2, "QuantizedLinear")
        self.in_features, self.out_features = weight.cols, weight.rows
        self.bias = _bias_parameter(bias, weight.rows, "QuantizedLinear")
        self.device = device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"QuantizedLinear: input of shape {tuple(x.shape)}; its last dimension must be the "
                             f"layer's {self.in_features} inputs")
        return self._product(x)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                + self._describe())


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


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
        self.stride, self.dilation = _pair(stride), _pair(dilation)
        if isinstance(padding, str) and padding not in ("valid", "same"):
            raise ValueError(f"QuantizedConv2d: padding {padding!r}; numbers, 'valid' or 'same'")
        if padding == "same" and self.stride != (1, 1):
            raise ValueError("QuantizedConv2d: padding='same' needs stride 1, as torch.nn.Conv2d's does")
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        if min(self.stride + self.dilation) < 1 or (not isinstance(self.padding, str) and min(self.padding) < 0):
            raise ValueError(f"QuantizedConv2d: stride {self.stride} and dilation {self.dilation} must be positive, "
                             f"padding {self.padding} not negative")
        self.bias = _bias_parameter(bias, weight.shape[0], "QuantizedConv2d")
        self.device = device

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
        batched = x.dim() == 4
        x, padding = self._padded(x if batched else x.unsqueeze(0))
        (kh, kw), (dh, dw), (sh, sw) = self.kernel_size, self.dilation, self.stride
        out_h = (x.shape[2] + 2 * padding[0] - dh * (kh - 1) - 1) // sh + 1
        out_w = (x.shape[3] + 2 * padding[1] - dw * (kw - 1) - 1) // sw + 1
        if out_h < 1 or out_w < 1:
            raise ValueError(f"QuantizedConv2d: input of shape {tuple(x.shape)} is smaller than the "
                             f"{kh}x{kw} kernel (dilation {self.dilation}, padding {padding})")
        patches = F.unfold(x, self.kernel_size, dilation=self.dilation, padding=padding, stride=self.stride)
        y = self._product(patches.transpose(1, 2))  # [N, out_h·out_w, out_channels]
        y = y.transpose(1, 2).reshape(x.shape[0], self.out_channels, out_h, out_w)
        return y if batched else y.squeeze(0)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}, "
                + self._describe())


def _why_not_swapped(module) -> Optional[str]:
    """None for a layer quantize_modules swaps; otherwise why it is left as it is (or is not a layer
    it looks at: '')."""
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


def _swap(model, name: str, new) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _quantized_layer(module, q: QuantizedTensor, device: str):
    if isinstance(module, torch.nn.Linear):
        layer = QuantizedLinear(q, module.bias, device=device)
    else:
        layer = QuantizedConv2d(q, module.bias, stride=module.stride, padding=module.padding,
                                dilation=module.dilation, device=device)
    return layer.train(module.training)


def quantize_modules(model: torch.nn.Module, codebook: Codebook, *, skip: Any = None, normalise: Optional[str] = None,
                     group_size: Optional[int] = None, device: str = "auto", nonfinite: str = "error",
                     quantize_vectors: bool = False) -> dict:
    """Quantize the weights of `model`'s Linear and Conv2d layers with `codebook` and swap each such
    layer for a QuantizedLinear or QuantizedConv2d, in place. Returns {layer name: QuantizedTensor}.

    The weights are quantized by ``quantize_state_dict`` under the names ``<layer>.weight``, with its
    options: skip (globs, compiled expressions or a callable skip(name, tensor), as there: a layer
    whose weight it names is left as it is), normalise (default "global": one mean and standard
    deviation over every quantized weight, Algorithm 1), group_size, nonfinite, quantize_vectors
    (weights of one dimension above 1, as Linear(1, n)'s, are kept without it). A weight shared by
    several layers (tied) is quantized once and its codes shared. device is also the backend the
    new layers' products use. Layers of other types, subclasses, grouped and non-zero-padded
    convolutions are left as they are (named in a warning).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"quantize_modules: model must be a torch.nn.Module, not {type(model).__name__}")
    layers, left = {}, []
    for name, module in model.named_modules():
        why = _why_not_swapped(module)
        if why is None and name:
            layers[name] = module
        elif why is None:
            raise ValueError("quantize_modules: the model is itself a Linear or Conv2d layer; wrap it (e.g. in "
                             "torch.nn.Sequential) so that it can be swapped, or use nuq.quantize on its weight")
        elif why:
            left.append(f"{name} ({why})")
    if left:
        warnings.warn(f"quantize_modules: left as they are: {', '.join(left[:5])}"
                      f"{f' and {len(left) - 5} more' if len(left) > 5 else ''}", stacklevel=2)
    first_of = {}  # a tied weight's tensor -> the first layer that holds it: quantized once, under that name
    for name, module in layers.items():
        first_of.setdefault(id(module.weight), name)
    weights = {f"{name}.weight": layers[name].weight.detach() for name in first_of.values()}
    if not weights:
        raise ValueError("quantize_modules: the model has no torch.nn.Linear or torch.nn.Conv2d layer to quantize")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        try:
            quantized = quantize_state_dict(weights, codebook, skip=skip, normalise=normalise, group_size=group_size,
                                            device=device, nonfinite=nonfinite, quantize_vectors=quantize_vectors)
        except ValueError as error:
            raise ValueError(str(error).replace("quantize_state_dict:", "quantize_modules:", 1)) from None
    for warning in said:  # the state dict's warnings, said of this call
        warnings.warn(str(warning.message).replace("quantize_state_dict:", "quantize_modules:", 1),
                      warning.category, stacklevel=2)
    swapped = {}
    for name, module in layers.items():
        q = quantized.get(f"{first_of[id(module.weight)]}.weight")
        if isinstance(q, QuantizedTensor):
            _swap(model, name, _quantized_layer(module, q, device))
            swapped[name] = q
    return swapped


def load_quantized(model: torch.nn.Module, state_dict: Mapping[str, Any], *, strict: bool = True,
                   device: str = "auto"):
    """Put a quantized state dict (``nuq.load`` of a file ``nuq.save`` wrote from a model that
    ``quantize_modules`` quantized, or ``nuq quantize`` of its checkpoint) into `model`, a model of
    the same architecture: every Linear or Conv2d layer whose ``<layer>.weight`` is a QuantizedTensor
    becomes a QuantizedLinear or QuantizedConv2d holding it, and the rest is loaded by
    ``model.load_state_dict`` (numpy arrays as tensors). Returns what load_state_dict returns."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"load_quantized: model must be a torch.nn.Module, not {type(model).__name__}")
    if not hasattr(state_dict, "items"):
        raise TypeError(f"load_quantized: a dict of name -> tensor, not {type(state_dict).__name__}")
    modules = dict(model.named_modules())
    for key, value in state_dict.items():
        if not isinstance(value, QuantizedTensor):
            continue
        name = key[:-len(".weight")] if key.endswith(".weight") else None
        module = modules.get(name) if name else None
        if isinstance(module, (QuantizedLinear, QuantizedConv2d)):
            continue  # load_state_dict gives it its codes
        why = _why_not_swapped(module) if module is not None else ""
        if why is not None:
            raise ValueError(f"load_quantized: '{key}' holds packed codes, and the model has "
                             f"{f'there {why}' if why else 'no Linear or Conv2d layer of that name'}")
        expected = tuple(module.weight.shape)
        if tuple(value.shape) != expected:
            raise ValueError(f"load_quantized: '{key}': codes of shape {tuple(value.shape)}, the layer's weight is "
                             f"{expected}")
        _swap(model, name, _quantized_layer(module, value, device))
    as_tensors = {k: (torch.from_numpy(np.asarray(v, dtype=np.float32) if _widened(v) else np.asarray(v))
                      if isinstance(v, np.ndarray) else v) for k, v in state_dict.items()}
    return model.load_state_dict(as_tensors, strict=strict)


def _widened(array) -> bool:
    return (array.dtype.metadata or {}).get("widened_from") is not None


__all__ = ["QuantizedLinear", "QuantizedConv2d", "quantize_modules", "load_quantized"]
