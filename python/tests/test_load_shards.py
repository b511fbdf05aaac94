"""nuq.load of a sharded checkpoint: a folder of shards or its index, as the command line reads it."""

import json
import warnings

import numpy as np
import pytest

import nuq


def write_shards(folder, tensors, index=True):
    """Two shards of `tensors` (split by name order) and, when asked, their index."""
    folder.mkdir(exist_ok=True)
    names = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((names[:len(names) // 2], names[len(names) // 2:])):
        shard = f"model-{i + 1:05d}-of-00002.safetensors"
        nuq.save(folder / shard, {name: tensors[name] for name in part})
        weight_map.update({name: shard for name in part})
    if index:
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return weight_map


@pytest.fixture
def tensors(rng):
    return {f"layers.{i}.{kind}": rng.laplace(size=(16, 32)).astype(np.float32)
            for i in range(2) for kind in ("q_proj.weight", "k_proj.weight")} | {"norm.weight": np.ones(32, np.float32)}


def test_a_folder_or_its_index_loads_as_one_dict(tmp_path, tensors):
    write_shards(tmp_path / "model", tensors)
    for path in (tmp_path / "model", tmp_path / "model" / "model.safetensors.index.json"):
        loaded = nuq.load(path)
        assert set(loaded) == set(tensors)
        for name, value in tensors.items():
            np.testing.assert_array_equal(loaded[name], value)


def test_quantized_shards_load_as_the_tensors_of_one_run(nuq_cli, tmp_path, tensors):
    write_shards(tmp_path / "model", tensors)
    nuq_cli("quantize", tmp_path / "model", "-o", tmp_path / "q", "-m", "msptq")
    loaded = nuq.load(tmp_path / "q")
    shards = sorted((tmp_path / "q").glob("*.safetensors"))
    assert len(shards) == 2
    separately = {name: value for shard in shards for name, value in nuq.load(shard).items()}
    assert set(loaded) == set(separately) == set(tensors)
    for name, value in separately.items():
        if isinstance(value, nuq.QuantizedTensor):
            np.testing.assert_array_equal(loaded[name].codes, value.codes)
            np.testing.assert_array_equal(loaded[name].dequantize(), value.dequantize())
        else:
            np.testing.assert_array_equal(loaded[name], value)
    # A shard of another run (other statistics) in the folder: refused, naming it.
    write_shards(tmp_path / "other", {name: 2 * value for name, value in tensors.items()})
    nuq_cli("quantize", tmp_path / "other", "-o", tmp_path / "q2", "-m", "msptq")
    (tmp_path / "q" / "model-00002-of-00002.safetensors").write_bytes(
        (tmp_path / "q2" / "model-00002-of-00002.safetensors").read_bytes())
    with pytest.raises(ValueError, match="quantized by another run"):
        nuq.load(tmp_path / "q")


def test_an_index_that_disagrees_with_its_shards_is_warned_of_and_the_shards_followed(tmp_path, tensors):
    weight_map = write_shards(tmp_path / "model", tensors, index=False)
    del weight_map["norm.weight"]  # the shards hold it; the index forgets it
    (tmp_path / "model" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = nuq.load(tmp_path / "model")
    assert "norm.weight" in loaded
    assert any("norm.weight" in str(w.message) for w in caught), [str(w.message) for w in caught]


def test_a_folder_without_shards_is_a_value_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither"):
        nuq.load(tmp_path / "empty")


def test_a_folder_without_an_index_leaves_what_is_no_shard_and_says_so(tmp_path, tensors):
    folder = tmp_path / "model"
    folder.mkdir()
    nuq.save(folder / "model.safetensors", tensors)
    nuq.save(folder / "adapter_model.safetensors", {"base_model.lora_A.weight": np.ones((4, 32), np.float32)})
    (folder / "._model.safetensors").write_bytes(b"\x00\x05\x16\x07Mac OS X")
    with pytest.warns(UserWarning) as warned:
        loaded = nuq.load(folder)
    assert sorted(loaded) == sorted(tensors)
    said = sorted(str(w.message) for w in warned)
    assert len(said) == 2 and "._model.safetensors is not read as a shard" in said[0] and \
        "adapter_model.safetensors is not read as a shard of the model (an adapter" in said[1]
    assert all(w.filename == __file__ for w in warned), "the warnings name nuq's code, not nuq.load's caller"
    nuq.save(folder / "model.fp16.safetensors", tensors)  # a variant beside the model: said as the CLI says it
    with pytest.raises(ValueError, match=r"model\.safetensors: tensor '.*' is also in .*model\.fp16\.safetensors: the "
                                         r"files are no shards of one model"):
        nuq.load(folder)
