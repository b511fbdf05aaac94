"""nuq's MLP and CNN run in PyTorch as docs/format.md describes them, and predict what `nuq eval` does.

Each network is trained by `nuq train` on a small learnable stand-in for MNIST (IDX files written
here), quantized and dequantized by the CLI, and its files read with a safetensors reader of this
test's own. PyTorch's forward pass (in FP64, its own conv2d and max_pool2d) must predict the class
`nuq eval --predictions` wrote for every test image, from the FP32 model and from the packed codes,
save where the two largest logits are too close for either to be sure of the order; and the
accuracy `nuq eval` prints must be the share of those predictions that match the labels.
"""

import json
import pathlib
import re
import struct

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

TRAIN, TEST = 600, 200


def write_idx(path: pathlib.Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes (type code 0x08), dimensions big-endian."""
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def learnable_digits(root: pathlib.Path) -> np.ndarray:
    """<root>/mnist: ten blurred prototypes plus noise, so that training learns; returns the test labels."""
    rng = np.random.default_rng(3)
    prototypes = rng.random((10, 28, 28)) ** 3
    folder = root / "mnist"
    folder.mkdir(parents=True)
    for split, count in (("train", TRAIN), ("t10k", TEST)):
        labels = rng.integers(0, 10, count)
        images = 255 * np.clip(prototypes[labels] + 0.35 * rng.random((count, 28, 28)), 0, 1)
        write_idx(folder / f"{split}-images-idx3-ubyte", images.round())
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels)
    return labels


def read_f32_safetensors(path: pathlib.Path) -> dict:
    """Every F32 tensor of a safetensors file, by this test's own reading of the format."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    header.pop("__metadata__", None)
    data = raw[8 + length:]
    tensors = {}
    for name, entry in header.items():
        assert entry["dtype"] == "F32", (name, entry["dtype"])
        begin, end = entry["data_offsets"]
        tensors[name] = torch.from_numpy(np.frombuffer(data[begin:end], dtype="<f4").reshape(entry["shape"]).copy())
    return tensors


def images(root: pathlib.Path) -> torch.Tensor:
    raw = (root / "mnist" / "t10k-images-idx3-ubyte").read_bytes()
    return torch.from_numpy(np.frombuffer(raw[16:], dtype=np.uint8).reshape(-1, 1, 28, 28).copy())


def torch_logits(w: dict, pixels: torch.Tensor, architecture: str) -> torch.Tensor:
    """The forward pass docs/format.md gives: pixels / 255; the CNN's 3 x 3 convolution (no padding,
    stride 1), ReLU, 2 x 2 max-pooling and flattening in (channel, row, column) order; then the
    dense layers y = x W^T + b, ReLU after the first two."""
    w = {k: v.double() for k, v in w.items()}
    x = pixels.double() / 255
    if architecture == "cnn":
        x = F.max_pool2d(F.relu(F.conv2d(x, w["conv.weight"], w["conv.bias"])), 2)
    x = x.flatten(1)
    x = F.relu(F.linear(x, w["fc1.weight"], w["fc1.bias"]))
    x = F.relu(F.linear(x, w["fc2.weight"], w["fc2.bias"]))
    return F.linear(x, w["fc3.weight"], w["fc3.bias"])


def assert_same_predictions(logits: torch.Tensor, predictions_file: pathlib.Path, what: str) -> None:
    ours = torch.tensor([int(line) for line in predictions_file.read_text().split()])
    assert ours.shape == (TEST,), what
    theirs = logits.argmax(1)
    top2 = logits.topk(2, dim=1).values
    sure = (top2[:, 0] - top2[:, 1]) > 1e-4 * top2[:, 0].abs().clamp(min=1)
    assert sure.sum() >= TEST - 2, f"{what}: too many near ties to compare"
    differ = ((ours != theirs) & sure).nonzero().flatten().tolist()
    assert not differ, f"{what}: nuq and PyTorch predict differently for test images {differ}"


@pytest.mark.parametrize("architecture", ["mlp", "cnn"])
def test_pytorch_predicts_what_nuq_eval_predicts(architecture, tmp_path, nuq_cli):
    labels = learnable_digits(tmp_path)
    model = tmp_path / "model.safetensors"
    nuq_cli("train", "--model", architecture, "--epochs", "2", "--data", tmp_path, "-o", model, "--json")
    nuq_cli("quantize", model, "-o", tmp_path / "q.safetensors")
    nuq_cli("dequantize", tmp_path / "q.safetensors", "-o", tmp_path / "d.safetensors")
    pixels = images(tmp_path)
    for source, weights in ((model, model), (tmp_path / "q.safetensors", tmp_path / "d.safetensors")):
        predictions = tmp_path / (source.stem + ".txt")
        printed = nuq_cli("eval", source, "--data", tmp_path, "--device", "cpu", "--predictions", predictions)
        logits = torch_logits(read_f32_safetensors(weights), pixels, architecture)
        assert_same_predictions(logits, predictions, f"{architecture} {source.name}")
        ours = np.array([int(line) for line in predictions.read_text().split()])
        accuracy = float(re.search(r"test accuracy ([\d.]+)%", printed).group(1))
        assert accuracy == pytest.approx(100 * np.mean(ours == labels), abs=0.005), printed
        assert accuracy > 50, f"{architecture} {source.name}: the stand-in task was not learnt ({printed.strip()})"
