"""bit_rate_of: the bit-rate rule for given weights (one tensor or a state dict), predicted and
measured, as ``nuq bitrate --model [--measure]`` gives it for a file."""

from __future__ import annotations

import numbers

from . import _nuq
from ._arrays import _as_stored, _require_utf8
from ._quantize import _one_tensor
from ._state_dicts import _chosen_tensors


def _whole(value, what: str):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"bit_rate_of: {what} must be an int, not {type(value).__name__}")
    return int(value)


def bit_rate_of(weights, sqnr_min_db: float, *, per_tensor: bool = False, measure: bool = False, skip=None,
                quantize_vectors: bool = False, nonfinite: str = "error", min_bits: int = 1,
                max_bits: int = 16) -> dict:
    """The smallest bit rate R whose unit-variance uniform design keeps SQNR >= sqnr_min_db for these
    weights quantized unnormalised (``nuq quantize -m uniform -b R --normalise none``), as
    ``nuq bitrate --model`` answers for a file (docs/variance-mismatch.md).

    weights: one array or tensor (float32, float16, bfloat16; float64 is rounded to float32 first,
    as ``quantize`` rounds it), or a state dict, whose tensors are those ``quantize_state_dict`` would
    quantize (skip and quantize_vectors as there). The rule judges the weights together (their
    signal over their noise, each tensor as the Laplacian of its own mean and sigma), or with
    per_tensor=True each tensor (all-zero ones left out). measure=True checks it on the weights
    themselves: they are quantized at each rate tried, from the rule's answer (down while the rate
    below keeps the floor too, up until one does), and the smallest R measured to keep the floor is
    the answer, beside each tensor's excess kurtosis (3 for the Laplacian the rule assumes; heavy
    tails and pruned zeros measure what the rule cannot foresee). nonfinite: "error" (NaN/Inf raise
    ValueError) or "saturate" (left out, as quantize leaves them).

    Returns a dict (the numbers of ``nuq bitrate --model --json``, under these keys): bits (the
    rule's R, None when none in [min_bits, max_bits] keeps the floor, and reason then says why, as
    the command does), worst_sqnr_db (its prediction), from_db and to_db (20 log10 of the rms: the
    weights together, or the smallest and largest tensor's), rates (each R's bits, worst_sqnr_db,
    worst_at_db), weights (rms, mean, sigma, count, tensors, zero_tensors, constant_tensors: names
    of tensors judged as the one value they hold, smallest_rms and largest_rms: tensor names), and
    with measure=True measured: bits (None when none keeps the floor as measured; reason), rates
    (each R measured: bits, sqnr_ex_db together, lowest_tensor and lowest_sqnr_ex_db) and
    excess_kurtosis (name -> value, None for a tensor of no spread). A single tensor is named
    "tensor"."""
    if isinstance(sqnr_min_db, bool) or not isinstance(sqnr_min_db, numbers.Real):
        raise TypeError(f"bit_rate_of: sqnr_min_db must be a number of dB, not {type(sqnr_min_db).__name__}")
    if not isinstance(nonfinite, str):
        raise TypeError(f"bit_rate_of: nonfinite must be a string, not {type(nonfinite).__name__}")
    _require_utf8(nonfinite, f"bit_rate_of: nonfinite={nonfinite!r}")
    min_bits, max_bits = _whole(min_bits, "min_bits"), _whole(max_bits, "max_bits")
    for flag, value in (("per_tensor", per_tensor), ("measure", measure), ("quantize_vectors", quantize_vectors)):
        if not isinstance(value, bool):
            raise TypeError(f"bit_rate_of: {flag} must be True or False, not {value!r}")
    if hasattr(weights, "items"):
        chosen = _chosen_tensors(weights, skip, quantize_vectors, "bit_rate_of")
    else:
        if skip is not None or quantize_vectors:
            raise TypeError("bit_rate_of: skip and quantize_vectors choose among a state dict's tensors; weights is "
                            "one tensor")
        expected = "weights must be a numpy array, a PyTorch tensor or a state dict"
        chosen = [("tensor", _one_tensor(weights, "bit_rate_of", "tensor", expected, "it has no signal"))]
    inputs = []
    for name, tensor in chosen:  # (a loop: _as_stored's warnings point at the caller)
        array, tag, _ = _as_stored(tensor, name)
        inputs.append((name, array, tag))
    return _nuq._bit_rate_of(inputs, float(sqnr_min_db), per_tensor, measure, min_bits, max_bits, nonfinite)
