# Type stub of the nuq package (the _nuq extension and the Python layer), for editors.
import os
import re
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Tuple, Union, overload

import numpy as np

from . import nn as nn  # PyTorch layers that multiply by packed codes (imports torch on first use)

ArrayLike = Any  # numpy.ndarray or torch.Tensor (float32, float16, bfloat16)
PathLike = Union[str, bytes, os.PathLike]

__version__: str  # the library's, as `nuq --version` gives it

class Codebook:
    method: str
    bits: int
    thresholds: np.ndarray
    levels: np.ndarray
    xmax: float
    sigma: float
    rule: str
    iterations: int
    mu: Optional[float]
    alpha: Optional[float]
    trace: np.ndarray
    distortion: float
    granular: float
    overload: float
    sqnr_db: float
    @overload
    def quantize_values(self, x: Sequence[float]) -> list[float]: ...
    @overload
    def quantize_values(self, x: float) -> float: ...
    def to_json(self) -> str: ...
    @staticmethod
    def from_json(text: str) -> Codebook: ...

class QuantizedTensor:
    shape: Tuple[int, ...]
    rows: int
    cols: int
    bits: int
    group_size: int
    dtype: str
    normalisation: str
    codebook: Optional[Codebook]
    codes: np.ndarray
    levels: np.ndarray
    scales: Optional[np.ndarray]
    grid: Optional[Tuple[float, float]]
    mean: float
    scale: float
    stats: Optional[dict]
    sqnr_ex_db: Optional[float]
    within: Optional[float]
    max_error: Optional[float]
    nbytes: int
    device: Any  # torch.device that dequantize() restores to (CPU for numpy or a file's codes); None without torch
    ndim: int
    requires_grad: bool
    def size(self, dim: Optional[int] = None) -> Any: ...  # torch.Size of the shape (an int for one dim)
    def numel(self) -> int: ...
    def dim(self) -> int: ...
    def unpacked_codes(self) -> np.ndarray: ...
    def dequantize(self, dtype: Any = "float32") -> ArrayLike: ...

def design(method: str, bits: Optional[int] = None, *, xmax: Optional[float] = None, sigma: float = 1.0,
           levels: Optional[int] = None, rule: Optional[str] = None, alpha: float = 1.0, mu: float = 255.0,
           init: Optional[float] = None, epsilon: Optional[float] = None) -> Codebook: ...
def sweep(method: str, start: float, stop: float, step: float, *, bits: int = 2, sigma: float = 1.0,
          alpha: float = 1.0, mu: float = 255.0) -> dict[str, np.ndarray]: ...
def support_xmax(support: str, w_min: Optional[float] = None, w_max: Optional[float] = None,
                 alpha: float = 1.0) -> float: ...
def devices() -> list[str]: ...
def set_num_threads(threads: int) -> None: ...
def get_num_threads() -> int: ...
def mismatch(bits: int, start_db: float, stop_db: float, step_db: float = 1.0) -> dict[str, np.ndarray]: ...
def bit_rate(sqnr_min_db: float, from_db: float, to_db: Optional[float] = None, *, step_db: float = 1.0,
             min_bits: int = 1, max_bits: int = 16) -> Optional[dict[str, Union[int, float]]]: ...
def bit_rate_of(weights: Union[ArrayLike, Mapping[str, Any]], sqnr_min_db: float, *, per_tensor: bool = False,
                measure: bool = False,
                skip: Union[None, str, re.Pattern[str], Iterable[Union[str, re.Pattern[str]]],
                            Callable[[str, Any], bool]] = None,
                quantize_vectors: bool = False, nonfinite: str = "error", min_bits: int = 1,
                max_bits: int = 16) -> dict[str, Any]: ...
def worst_sqnr(bits: int, from_db: float, to_db: Optional[float] = None, *,
               step_db: float = 1.0) -> dict[str, Union[int, float]]: ...
def quantize(w: ArrayLike, codebook: Codebook, *, normalise: Optional[str] = None, group_size: Optional[int] = None,
             device: str = "auto", nonfinite: str = "error", name: str = "tensor") -> QuantizedTensor: ...
def quantize_state_dict(state_dict: Mapping[str, Any], codebook: Codebook, *,
                        skip: Union[None, str, re.Pattern[str], Iterable[Union[str, re.Pattern[str]]],
                                    Callable[[str, Any], bool]] = None,
                        normalise: Optional[str] = None, group_size: Optional[int] = None, device: str = "auto",
                        nonfinite: str = "error", quantize_vectors: bool = False) -> dict[str, Any]: ...
def dequantize_state_dict(state_dict: Mapping[str, Any], *, as_torch: bool = False,
                          dtype: Any = "float32") -> dict[str, Any]: ...
def qgemm(x: ArrayLike, q: QuantizedTensor, bias: Optional[ArrayLike] = None, *, device: str = "auto") -> ArrayLike: ...
def load(path: PathLike) -> dict[str, Union[QuantizedTensor, np.ndarray]]: ...
def load_metadata(path: PathLike) -> dict[str, str]: ...
def to_float32(array: np.ndarray) -> np.ndarray: ...
def save(path: PathLike, tensors: Mapping[str, Any], metadata: Optional[Mapping[str, str]] = None) -> None: ...

class paper:
    SPTQ_DELTA: float
    SPTQ_XMAX: float
    MSPTQ_DELTA: float
    MSPTQ_XMAX: float
    MSPTQ_ITERATIONS: int
    MNIST_MLP_RANGE: Tuple[float, float]
    MULAW_255_SQNR: float  # quoted by the paper from its ref. [16]
    LLOYD_MAX_4_SQNR: float  # from the literature (Jayant), not stated in the paper
    @staticmethod
    def table2() -> list[dict]: ...
    @staticmethod
    def tables() -> list[dict]: ...
