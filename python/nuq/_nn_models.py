"""What nuq.nn reads of a model: which layers it swaps, which it leaves and why, the weights that
stay float, the ties a swap breaks, and what the functions it calls say, said of itself. (Imported
by nuq.nn only, so PyTorch stays unimported until nuq.nn is.)"""

from __future__ import annotations

import warnings
from typing import Callable, Optional

import numpy as np
import torch

from ._nuq import QuantizedTensor
from ._state_dicts import _listed, _skipped_by, _vector_like


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


def _weights(model) -> dict:
    """{id(parameter): (parameter, [every name it is registered under])}: the model's weights, its
    floating parameters of two or more dimensions (a tied one once, under each of its names)."""
    found = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for name, p in module._parameters.items():
            if p is not None and p.is_floating_point() and p.dim() >= 2:
                key = f"{module_name}.{name}" if module_name else name
                found.setdefault(id(p), (p, []))[1].append(key)
    return found


def _matrices(module, names) -> list:
    """[(parameter name in the model, tensor)] of a module's own matrices (parameters of two or more
    dimensions above 1: what ``nuq quantize`` would quantize in a checkpoint), under its first name."""
    prefix = f"{names[0]}." if names[0] else ""
    return [(prefix + n, p) for n, p in module._parameters.items()
            if p is not None and p.is_floating_point() and not _vector_like(n, p)]


def _other_type_left(module, names, patterns) -> Optional[str]:
    """How a module of a type nuq.nn does not swap (Conv1d, ConvTranspose2d, Embedding, LSTM,
    Bilinear, attention's in_proj_weight, a model's own parameter) is named among the layers left,
    or None where it holds no matrix of its own or skip names them all (left without a word)."""
    matrices = [(k, p) for k, p in _matrices(module, names) if not _skipped_by(patterns, k, p.detach())]
    if not matrices:
        return None
    own = [k.rpartition(".")[2] for k, _ in matrices]
    held = "" if own == ["weight"] else f"'s {_listed(own, 2)}"
    return f"{names[0] or '(the model itself)'} ({type(module).__name__}{held}: only Linear and Conv2d are swapped)"


def _float_left(model, codes: list) -> str:
    """How many of the model's weights stay float once the layers holding `codes` (QuantizedTensors)
    are swapped: its weights then are those float ones and the codes (a tie the swap broke counts twice)."""
    left = [p for p, _ in _weights(model).values()]
    distinct = list({id(q): q for q in codes}.values())
    values = sum(p.numel() for p in left)
    total = values + sum(int(np.prod(q.shape, dtype=np.int64)) for q in distinct)
    return f"float weights left: {len(left)} of the model's {len(left) + len(distinct)} ({values} of {total} values)"


def _ties_broken(model, weights: dict, swapped) -> list:
    """The swapped layers (swapped: [(module, names)]) whose weight is also a parameter that stays
    float (an LM head tied to its embedding): after the swap the layer holds codes of its own, and a
    change to that parameter no longer reaches it."""
    swapped_keys = {f"{n}.weight" for _, names in swapped for n in names}
    found = []
    for module, names in swapped:
        entry = weights.get(id(module.weight))
        others = [k for k in (entry[1] if entry else []) if k not in swapped_keys]
        if others:
            def owner(key):
                parent = key.rpartition(".")[0]
                return type(model.get_submodule(parent) if parent else model).__name__
            also = ", ".join(f"{k} ({owner(k)})" for k in others)
            found.append(f"{names[0]}.weight, tied to {also}")
    return found


def _warn_of_ties(caller: str, broken: list, stacklevel: int) -> None:
    if broken:
        warnings.warn(f"{caller}: tied weights untied (the float parameter stays as it is): {_listed(broken)}; each "
                      "swapped layer holds codes of its own now, and later changes to the float parameter no longer "
                      "reach it (skip naming the layer keeps it float and tied)", stacklevel=stacklevel + 1)


def _said_of(caller: str, inner: str, call: Callable):
    """call(), its warnings and its ValueError or TypeError said of `caller` instead of `inner` (the
    function it calls), the warnings before the error (a float64 model's warning explains why nothing
    was quantized)."""
    failure = None
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        try:
            result = call()
        except (ValueError, TypeError) as error:
            failure = error

    def renamed(text: str) -> str:
        return f"{caller}:{text[len(inner) + 1:]}" if text.startswith(f"{inner}:") else text

    for warning in said:
        warnings.warn(renamed(str(warning.message)), warning.category, stacklevel=3)
    if failure is not None:
        # Only nuq's own refusals, said of `inner`, are said again; anything else (a bug, torch's own
        # error) goes on as it came, with its traceback.
        if type(failure) in (ValueError, TypeError) and str(failure).startswith(f"{inner}:"):
            raise type(failure)(renamed(str(failure))) from None
        raise failure
    return result


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
