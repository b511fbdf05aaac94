"""Whole state dicts: which tensors are quantized (as ``nuq quantize`` chooses in a checkpoint)
and which are kept, and every quantized one restored."""

from __future__ import annotations

import fnmatch
import math
import numbers
import re
import warnings

import numpy as np

from . import _nuq
from ._arrays import (_as_stored, _check_names, _floating, _is_float64, _is_torch, _native_byte_order, _shape,
                      _stored_dtype, _torch)
from ._files import to_float32
from ._nuq import Codebook, QuantizedTensor
from ._quantize import _check_options, _device_path, _quantize_on_device

def _skip_patterns(skip, caller: str):
    """skip as a list of globs and compiled regular expressions (a generator is read once); a skip
    of another type is a TypeError, said of `caller`."""
    if skip is None or callable(skip):
        return skip
    if isinstance(skip, (bytes, bytearray)):
        raise TypeError(f"{caller}: skip: a glob string or a compiled regular expression, not bytes")
    if isinstance(skip, (str, re.Pattern)):
        return [skip]
    try:
        patterns = list(skip)
    except TypeError:
        raise TypeError(f"{caller}: skip: {skip!r}; give None, a callable skip(name, tensor), a glob string, a "
                        "compiled regular expression, or a list of globs and expressions") from None
    for pattern in patterns:
        if not isinstance(pattern, (str, re.Pattern)):
            raise TypeError(f"{caller}: skip: {pattern!r} is neither a glob string nor a compiled regular expression")
    return patterns


def _matches(pattern, name: str) -> bool:
    if isinstance(pattern, re.Pattern):
        return pattern.search(name) is not None  # as `nuq quantize --skip`: searched, not anchored
    return fnmatch.fnmatchcase(name, pattern)


def _skipped_by(patterns, name: str, tensor) -> bool:
    """Whether skip (_skip_patterns's: None, a callable or patterns) names tensor `name`."""
    if patterns is None:
        return False
    if callable(patterns):
        return bool(patterns(name, tensor))
    return any(_matches(p, name) for p in patterns)


def _listed(items, shown: int = 5) -> str:
    """The first `shown` of `items`, and how many more."""
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def _warn_of_unmatched(patterns, names, caller: str, stacklevel: int) -> None:
    """A warning for each of skip's patterns (_skip_patterns's) that names none of `names`."""
    if patterns is None or callable(patterns):
        return
    for pattern in patterns:
        if not any(_matches(pattern, k) for k in names):
            how = ("a regular expression, searched in each name" if isinstance(pattern, re.Pattern) else
                   "a glob, matched against the whole name; pass re.compile(...) for a regular expression")
            shown = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
            warnings.warn(f"{caller}: skip pattern {shown!r} names no tensor ({how})", stacklevel=stacklevel + 1)


def _module(name: str) -> str:
    return name.rpartition(".")[0]


def _vector_like(name: str, value) -> bool:
    """Kept as norms and biases are unless quantize_vectors, as ``nuq quantize`` keeps them: fewer
    than two dimensions, one dimension above 1 (ViT's cls_token [1, 1, d]), or a name whose last
    part ends in "bias" (gpt-oss's per-expert gate_up_proj_bias [E, 2I])."""
    shape = _shape(value)
    return len(shape) < 2 or sum(d > 1 for d in shape) < 2 or name.rpartition(".")[2].endswith("bias")


def _kept_by_default(state_dict, quantize_vectors: bool):
    """The floating tensors ``nuq quantize`` keeps in a checkpoint: empty ones, vectors, scalars and
    biases (_vector_like) unless quantize_vectors, and those of a module that holds a tensor of another
    dtype (a module another tool quantized: an FP8 weight's scale, GPTQ's scales beside its int32 qweight)."""
    marks = [k for k, v in state_dict.items() if _marks_a_quantized_module(k, v)]
    # Its module, and itself as one (bitsandbytes keeps `<m>.weight.absmax` beside the U8 `<m>.weight`)
    elsewhere = {m for k in marks for m in (_module(k), k) if m}
    return {k for k, v in state_dict.items()
            if _floating(v) and ((not quantize_vectors and _vector_like(k, v)) or 0 in _shape(v) or _module(k) in elsewhere)}


def _marks_a_quantized_module(name: str, v) -> bool:
    """A tensor of another dtype that says its module was quantized by another tool: packed codes
    or 8-bit weights (I32, U8, I8, FP8, F4, ...), never an index or counter buffer (I64, U64, bool:
    BatchNorm's num_batches_tracked, position_ids) or a one-element tensor."""
    if not hasattr(v, "dtype") or isinstance(v, QuantizedTensor) or _floating(v):
        return False
    if int(np.prod(_shape(v), dtype=np.int64)) <= 1:
        return False
    dtype = str(v.dtype).replace("torch.", "")
    return dtype not in ("int64", "uint64", "bool", "float64")


def _is_mask(v) -> bool:
    """A mask stored as floats, which ``nuq quantize`` keeps as it is: every value 0 or 1 (GPT-2's
    causal ``h.N.attn.bias``), or 0 or one value at most -100 (added to attention scores: Swin's
    ``attn_mask`` of 0 and -100, PyTorch's causal masks of 0 and -inf), both present. Its first values tell weights apart before the whole
    is looked at. A tensor without values to look at (PyTorch's meta device, a sparse layout) is
    left to the reading that refuses it by name."""
    if _is_torch(v):
        if v.device.type == "meta" or v.layout != _torch().strided:
            return False
        flat = v.detach().reshape(-1)
    else:
        flat = np.asarray(v).reshape(-1)

    def other(x):
        """The one value of `x` other than 0 if it is a mask's (None if none), or False; and whether
        `x` holds a 0."""
        rest = x[x != 0]
        if rest.shape[0] == 0:
            return None, x.shape[0] > 0
        first = float(rest[0])
        mask_value = first == 1.0 or first <= -100.0  # -inf included (NaN is not)
        return (first if mask_value and bool((rest == rest[0]).all()) else False), rest.shape[0] < x.shape[0]

    # Its first values first, then pieces of 2^20: a weight met early ends the look, and no
    # temporary is larger than a piece (an embedding whose padding row of zeros comes first is
    # looked at whole, and its copies would be GBs).
    value, zero, start, step = None, False, 0, 64
    while start < flat.shape[0]:
        found, has_zero = other(flat[start:start + step])
        if found is False or (found is not None and value is not None and found != value):
            return False
        value = found if found is not None else value
        zero = zero or has_zero
        start, step = start + step, 1 << 20
    return value is not None and zero


def _require_groupable(chosen, group_size) -> None:
    """Every tensor whose rows do not split into groups named at once, with a skip that keeps them, as
    ``nuq quantize --group-size`` names them (a group size that is no multiple of 8 is refused later)."""
    if isinstance(group_size, bool) or not isinstance(group_size, numbers.Integral) or group_size <= 0 or group_size % 8:
        return  # (numpy's integers too: numbers.Integral, as _check_options takes them)
    group_size = int(group_size)
    cols = lambda shape: int(np.prod(shape[1:], dtype=np.int64)) if len(shape) >= 2 else int(np.prod(shape, dtype=np.int64))
    names = sorted(k for k, v in chosen if cols(_shape(v)) % group_size)
    if names:
        shown = _listed([f"'{k}'" for k in names])
        pattern = "^(" + "|".join(re.escape(k) for k in names) + ")$"
        raise ValueError(f"quantize_state_dict: the rows of {len(names)} tensor(s) do not split into groups of "
                         f"{group_size}: {shown}; keep them as they are with skip=re.compile({pattern!r}) (joined "
                         "to a skip given), or choose a group size that divides their rows")


def _require_names_free(state_dict, chosen, codebook, group_size) -> None:
    """No tensor of the state dict under a name nuq.save would store a quantized one's parts by
    (".codes", ".codebook", ...), said before the work, as ``nuq quantize`` says it of a checkpoint."""
    grouped = int(group_size) if group_size else 0  # (checked by _check_options)
    for name, _ in chosen:
        for stored in _nuq._stored_names(name, codebook, grouped):
            if stored in state_dict:
                raise ValueError(f"quantize_state_dict: tensor '{name}' cannot be stored: the state dict already has "
                                 f"a '{stored}' (nuq.save stores a part of the quantized '{name}' by that name); "
                                 f"rename one of them, or keep '{name}' as it is with skip")


def _chosen_tensors(state_dict, skip, quantize_vectors: bool, caller: str) -> list:
    """The (name, tensor) pairs of a state dict that `caller` quantizes, as ``nuq quantize`` chooses
    in a checkpoint (quantize_state_dict's docstring says which are kept), with the warnings it
    gives (pointing at the caller's caller); a state dict of another type, one holding
    QuantizedTensors, or one with nothing to quantize, is refused."""
    if not hasattr(state_dict, "items"):
        raise TypeError(f"{caller}: a dict of name -> tensor, not {type(state_dict).__name__}")
    _check_names(state_dict.keys(), caller)
    # As `nuq quantize` refuses a quantized file: codes quantized again with another codebook would
    # otherwise come back unchanged, under the old design, with nothing said.
    already = [k for k, v in state_dict.items() if isinstance(v, QuantizedTensor)]
    if already:
        raise ValueError(f"{caller}: tensor '{already[0]}' is already quantized"
                         f"{f' (and {len(already) - 1} more)' if len(already) > 1 else ''}; dequantize_state_dict() it "
                         "first to quantize the restored weights again")
    patterns = _skip_patterns(skip, caller)
    _warn_of_unmatched(patterns, list(state_dict), caller, stacklevel=3)  # (it adds its own frame)
    kept = _kept_by_default(state_dict, quantize_vectors)

    def skipped(name, tensor):
        return name in kept or _skipped_by(patterns, name, tensor)

    chosen = [(k, v) for k, v in state_dict.items() if _floating(v) and not skipped(k, v)]
    masks = {k for k, v in chosen if _is_mask(v)}
    if masks:  # as `nuq quantize` keeps them, and says so
        named = [k for k, _ in chosen if k in masks]  # in the state dict's order
        warnings.warn(f"{caller}: masks kept as they are (only 0 and 1, as GPT-2's causal attn.bias, or 0 "
                      f"and one value <= -100 or -inf, added to attention scores; not weights): {_listed(named, 3)}",
                      stacklevel=3)
        chosen = [(k, v) for k, v in chosen if k not in masks]
    doubles = [k for k, v in state_dict.items()
               if _is_float64(v) and (quantize_vectors or not _vector_like(k, v)) and not skipped(k, v)]
    if doubles:
        warnings.warn(f"{caller}: float64 tensors kept as they are: {_listed(doubles)} (a state dict's "
                      "float32, float16 and bfloat16 tensors are quantized, as nuq quantize keeps F64 ones; convert "
                      "them with .float() or .astype(np.float32) first to quantize them)", stacklevel=3)
    if not chosen:  # as `nuq quantize` says of such a checkpoint: asked for codes, there would be none
        raise ValueError(f"{caller}: no tensor to quantize (float32, float16 or bfloat16 tensors of two or "
                         "more dimensions above 1 whose names do not end in 'bias', or any with quantize_vectors=True, "
                         "that skip does not name)")
    return chosen


def quantize_state_dict(state_dict, codebook: Codebook, *, skip=None, normalise: str | None = None,
                        group_size: int | None = None, device: str = "auto", nonfinite: str = "error",
                        quantize_vectors: bool = False) -> dict:
    """Quantize the float32/float16/bfloat16 matrices of a state dict with one codebook, as
    ``nuq quantize`` does a checkpoint (the same tensors kept, the same codes). The command line
    quantizes one of nuq's own networks whole (Algorithm 1): quantize_vectors=True does the same.

    Kept as they are: masks (only 0 and 1, as GPT-2's causal ``attn.bias``, or 0 and one value
    <= -100 or -inf; with a warning); 1-D tensors and scalars (norms, biases, BatchNorm statistics: a 2-bit norm
    breaks a model), tensors of one dimension above 1 (ViT's cls_token [1, 1, d]) and those whose name
    ends in "bias" (gpt-oss's per-expert biases [E, 2I]) unless quantize_vectors=True (Algorithm 1 of the paper quantizes every
    parameter, biases included: nuq's own models are quantized so); the floating tensors of a
    module that also holds a tensor of another dtype (another tool's quantized module: FP8 weights'
    scales, GPTQ's scales beside its int32 qweight); and what `skip` names: None, a callable
    ``skip(name, tensor) -> bool``, or patterns, each a glob matched against the whole name
    (``"*.bias"``, ``"*norm*"``) or a compiled regular expression searched in it, as ``nuq quantize
    --skip`` does (``re.compile("embed_tokens|lm_head")``); a pattern that names no tensor warns.
    With normalise="global" the mean and standard deviation of all quantized tensors together
    normalise each; group_size as in ``quantize`` (every quantized tensor's rows must split into
    groups). Returns a dict with a QuantizedTensor for each quantized entry and the original object
    for every other. A state dict holding QuantizedTensors, or nothing to quantize, or a tensor under
    a name nuq.save would give a quantized one's part ("x.weight.codes" beside "x.weight"), is a
    ValueError before the work, as ``nuq quantize`` refuses such a checkpoint. Ctrl-C stops it after the tensor in hand (KeyboardInterrupt).
    """
    if not hasattr(state_dict, "items"):  # (before the options, as _chosen_tensors would say it after them)
        raise TypeError(f"quantize_state_dict: a dict of name -> tensor, not {type(state_dict).__name__}")
    _check_options("quantize_state_dict", codebook, normalise, group_size, nonfinite, device)
    chosen = _chosen_tensors(state_dict, skip, quantize_vectors, "quantize_state_dict")
    _require_groupable(chosen, group_size)
    _require_names_free(state_dict, chosen, codebook, group_size)
    if _device_path([v for _, v in chosen], device):
        out = dict(state_dict)
        out.update(zip((k for k, _ in chosen), _quantize_on_device(chosen, codebook, normalise, group_size, nonfinite)))
        return out
    inputs = []
    for k, v in chosen:  # (a loop, not a comprehension: _as_stored's warnings point at the caller)
        inputs.append((k,) + _as_stored(v, k))
    quantized = _nuq._quantize([(k, a, tag) for k, a, tag, _ in inputs], codebook, normalise, group_size, device,
                               nonfinite) if inputs else []
    out = dict(state_dict)
    for (k, _, _, torch_device), q in zip(inputs, quantized):
        q._device = torch_device
        out[k] = q
    return out


def _as_torch_tensor(name: str, value):
    """A value of a loaded state dict as a torch tensor: numpy arrays through ``torch.from_numpy``
    (bfloat16 as widened, exactly; 8-bit floats through ``to_float32``); torch tensors as they are."""
    import torch  # asked for by name: imported here if the caller has not
    if _is_torch(value) or not isinstance(value, np.ndarray):
        return value
    tag = _stored_dtype(value)  # (bfloat16 is widened, not tagged so: it goes through from_numpy below)
    if tag is not None:
        if tag.startswith("F8"):
            return torch.from_numpy(to_float32(value))
        raise ValueError(f"dequantize_state_dict: tensor '{name}' holds {tag} values, which torch has no dtype for")
    try:
        return torch.from_numpy(np.require(_native_byte_order(value), requirements="C"))  # (0-d stays 0-d)
    except TypeError as e:
        raise ValueError(f"dequantize_state_dict: tensor '{name}': {e}") from None


def dequantize_state_dict(state_dict, *, as_torch: bool = False, dtype="float32") -> dict:
    """Every QuantizedTensor of a dict replaced by its dequantized values: torch tensors (on their
    device) for tensors quantized from torch, numpy arrays otherwise (those of ``load``). With
    as_torch=True every value is a torch tensor (numpy arrays through ``torch.from_numpy``, 8-bit
    floats widened exactly), ready for ``model.load_state_dict``; a value torch has no dtype for (F4
    and F6 of MX checkpoints, unsigned 16- to 64-bit integers before torch 2.3) is a ValueError
    naming it. dtype is
    ``QuantizedTensor.dequantize``'s ("source": each tensor's own); other values are left as they are
    (with as_torch and dtype="source", a bfloat16 that ``load`` widened is bfloat16 again, as
    ``nuq dequantize --dtype source`` writes it)."""
    if not hasattr(state_dict, "items"):
        raise TypeError(f"dequantize_state_dict: a dict of name -> tensor, not {type(state_dict).__name__}")
    out = {}
    for k, v in state_dict.items():
        if not isinstance(v, QuantizedTensor):
            out[k] = _as_torch_tensor(k, v) if as_torch else v
            if as_torch and dtype == "source" and isinstance(v, np.ndarray) and \
                    (v.dtype.metadata or {}).get("widened_from") == "BF16":
                import torch
                out[k] = out[k].to(torch.bfloat16)  # (exact: every value is a bfloat16's)
            continue
        try:
            restored = v.dequantize(dtype)
        except ValueError as e:
            raise ValueError(f"dequantize_state_dict: tensor '{k}': {e}") from None
        if as_torch and isinstance(restored, np.ndarray):
            import torch
            bf16 = (restored.dtype.metadata or {}).get("widened_from") == "BF16"  # asked for: bfloat16 again
            restored = torch.from_numpy(restored).to(torch.bfloat16) if bf16 else torch.from_numpy(restored)
        out[k] = restored
    return out
