"""A tuned model as one GGUF file, for llama.cpp, Ollama and LM Studio, with an Ollama `Modelfile` beside it.

    export_gguf(run, "q8_0")   # runs/<id>/export/gguf/<id>-q8_0.gguf and runs/<id>/export/gguf/Modelfile

The conversion is llama.cpp's own `convert_hf_to_gguf.py`, run on the merged model folder: the GGUF format
(tensor names, tokenizer metadata, the pre-tokenizer llama.cpp must pick) changes with llama.cpp, and only
its converter keeps up. The script and the `gguf-py` it ships are taken from the llama-cpp-python source
package on PyPI (a pinned version, fetched once into the cache); nothing is compiled. It runs as a child
process with its own `gguf` package first on the path, so the app's `gguf` (used to read GGUF files in) may
differ from the converter's.

The converter's source is the merged model as export_merged saves it: bf16 for real models (fp32 only for toy
ones), so f32 is not offered (it would be bf16 upcast, twice the size and no more exact); f16 and q8_0 are
converted from those bf16 weights, bf16 keeps them as they are.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from finetuner.modeling.gguf_in import cache_root, downloads_dir, pip_download
from finetuner.runs import RunFolder
from finetuner.runs.export import ExportError, export_dir, export_merged

LLAMA_CPP_PYTHON = "0.3.36"  # the llama-cpp-python release whose vendored llama.cpp converter we run
SDIST = f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
_VENDOR = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
# What the converter imports: the script, its `conversion` package (one module per architecture) and gguf-py.
_NEEDED = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/gguf/", "LICENSE")
# The converter's own --outtype choices that make a usable model (tq1_0/tq2_0 are for ternary models only);
# no f32: its source, the merged model, is bf16 for real models (see the module docstring).
QUANTS = ("q8_0", "f16", "bf16")
# Packages the converter imports beyond torch/numpy/transformers/safetensors. sentencepiece is imported on
# the Llama, Mistral and Gemma paths even for BPE tokenizers (it tries a tokenizer.model first).
_PY_PACKAGES = ("sentencepiece",)
_TAIL = 15  # lines of the converter's output quoted in an error


def converter_dir() -> Path:
    return cache_root() / f"llama.cpp-convert-{LLAMA_CPP_PYTHON}"


def _say(progress):
    return progress or (lambda fraction, text: None)


def _fetch_sdist(progress=None) -> Path:
    """The llama-cpp-python source package in the downloads folder, fetched with pip on first use."""
    target = downloads_dir() / SDIST
    if target.is_file() and tarfile.is_tarfile(target):
        return target
    _say(progress)(0.0, f"Downloading llama.cpp's converter (llama-cpp-python {LLAMA_CPP_PYTHON} source, 77 MB)")
    # --no-binary for this one package only: the source package is what holds the converter; its build tools
    # still come as wheels (pip reads the package's metadata with them, which builds nothing).
    got, why = pip_download(f"llama-cpp-python=={LLAMA_CPP_PYTHON}", ["--no-binary", "llama-cpp-python"], SDIST, 1800)
    by_hand = (f"on a machine with internet run `pip download --no-deps --no-binary llama-cpp-python "
               f"llama-cpp-python=={LLAMA_CPP_PYTHON} -d .` and copy the file into {downloads_dir()}")
    if got is None and why.startswith("took over"):
        raise ExportError(f"Downloading llama.cpp's converter ({SDIST}, 77 MB) with pip {why}. Check the internet "
                          f"connection and try again, or {by_hand}.")
    if got is None:
        raise ExportError(f"Cannot download llama.cpp's converter from PyPI ({why}). GGUF export needs {SDIST} "
                          f"once: {by_hand}, then try again.")
    return got


def converter_path(progress=None) -> Path:
    """llama.cpp's `convert_hf_to_gguf.py`, extracted (with what it imports) into the cache on first use."""
    folder = converter_dir()
    script = folder / "convert_hf_to_gguf.py"
    if script.is_file():
        return script
    sdist = _fetch_sdist(progress)
    _say(progress)(0.02, "Unpacking llama.cpp's converter")
    # Extracted under a temporary name and renamed at the end, so a cut-short extraction never looks complete.
    tmp = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(_VENDOR)
                       and m.name[len(_VENDOR):].startswith(_NEEDED)]
            for m in members:
                m.name = m.name[len(_VENDOR):]
            if not any(m.name == "convert_hf_to_gguf.py" for m in members):
                raise ExportError(f"{sdist} holds no vendor/llama.cpp/convert_hf_to_gguf.py: it is not the "
                                  f"llama-cpp-python {LLAMA_CPP_PYTHON} source package. Delete it and try again.")
            # Checked here too, as extractall's filter="data" is missing before Python 3.11.4: only plain files
            # (kept above), none of them outside the target folder. Where the filter exists it is used as well
            # (without it Python 3.12+ warns).
            root = tmp.resolve()
            for m in members:
                if not (root / m.name).resolve().is_relative_to(root):
                    raise ExportError(f"{sdist} holds {m.name!r}, a path outside the folder it unpacks into: it is "
                                      f"not a genuine llama-cpp-python source package. Delete it and try again.")
            tar.extractall(tmp, members=members, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    except (tarfile.TarError, OSError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExportError(f"Cannot unpack {sdist} ({err}). Delete it and try again (it is downloaded anew).") from None
    if folder.exists():  # another export finished first; ours is the same files
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(folder)
    return script


def missing_packages() -> list[str]:
    return [name for name in _PY_PACKAGES if importlib.util.find_spec(name) is None]


def _explain(tail: str) -> str:
    """What a failed conversion means for the person, from the converter's last lines."""
    if "BPE pre-tokenizer was not recognized" in tail:
        return ("llama.cpp does not know this model's tokenizer (its pre-tokenizer is not in the converter's "
                "list), so it cannot write a GGUF for it.")
    if m := re.search(r"Model (\S+) is not supported", tail):
        return f"llama.cpp's converter does not support the architecture {m.group(1)}."
    if m := re.search(r"No module named '([\w.]+)'", tail):
        return (f"The converter needs the Python package `{m.group(1).split('.')[0]}`: install it with "
                f"`.venv/bin/pip install {m.group(1).split('.')[0]}`.")
    return "llama.cpp's converter failed."


def convert(model_dir: Path, outfile: Path, quant: str, progress=None, script: Path | None = None) -> Path:
    """Run the converter on a Hugging Face model folder; the file appears only when the conversion succeeded."""
    say = _say(progress)
    script = Path(script or converter_path(progress)).resolve()
    # Absolute, because the converter runs in its own folder: a relative run folder (`finetuner export
    # runs/<id> --gguf`) would not be found from there.
    model_dir, outfile = Path(model_dir).resolve(), Path(outfile).resolve()
    layers = json.loads((Path(model_dir) / "config.json").read_text()).get("num_hidden_layers") or 1
    outfile.parent.mkdir(parents=True, exist_ok=True)
    partial = outfile.with_name(f"{outfile.stem}.partial.gguf")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(script.parent / "gguf-py"), os.environ.get("PYTHONPATH")) if p))
    env.pop("NO_LOCAL_GGUF", None)  # that variable would make the script use the app's gguf instead of its own
    cmd = [sys.executable, str(script), str(model_dir), "--outfile", str(partial), "--outtype", quant]
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL)
    done: set[str] = set()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=str(script.parent))
    try:
        for line in proc.stdout:
            tail.append(line.rstrip())
            # One log line per tensor, layer by layer but in name order (blk.0, blk.1, blk.10, ...): the count of
            # layers seen so far is the progress, not the layer's number.
            if (m := re.search(r":blk\.(\d+)\.", line)) and m.group(1) not in done:
                done.add(m.group(1))
                say(min(1.0, len(done) / layers), f"Writing {quant} GGUF: layer {len(done)}/{layers}")
        rc = proc.wait()
    finally:
        # A progress callback that raised, Ctrl-C or a Gradio cancel must not leave the converter writing on.
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        if proc.returncode != 0:
            partial.unlink(missing_ok=True)
    if rc != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        text = "\n".join(tail)
        raise ExportError(f"{_explain(text)} Converting {model_dir} to {quant} GGUF failed (exit code {rc}); its "
                          f"last lines:\n{text}")
    partial.replace(outfile)
    return outfile


# ------------------------------------------------------------------ Ollama Modelfile

_PROBE = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
          {"role": "assistant", "content": "A"}, {"role": "user", "content": "V"}]
_CHATML = ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"
           "<|im_start|>user\nV<|im_end|>\n<|im_start|>assistant\n")
_DEFAULT_SYSTEM = re.compile(r"<\|im_start\|>system\n(.*)<\|im_end\|>\n<\|im_start\|>user\nU<\|im_end\|>\n"
                             r"<\|im_start\|>assistant\n", re.S)
# Ollama's TEMPLATE is a Go template: .System is the system prompt (Ollama folds system messages into it),
# .Messages the turns with .Role and .Content. `{{-` trims the newline before it, so only ChatML's own remain.
OLLAMA_CHATML = ('{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}\n'
                 '{{- range .Messages }}\n'
                 '{{- if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n'
                 '{{ else if eq .Role "assistant" }}<|im_start|>assistant\n{{ .Content }}<|im_end|>\n{{ end }}\n'
                 '{{- end }}<|im_start|>assistant\n')


def _render(tok, messages) -> str | None:
    try:
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - a template that cannot render these turns is simply not ChatML
        return None


def chatml_default_system(tok) -> tuple[bool, str | None]:
    """(whether the tokenizer's chat template renders plain ChatML, the system prompt it adds when none is
    given). Judged by rendering, not by reading the Jinja, so any spelling of ChatML counts."""
    if not getattr(tok, "chat_template", None) or _render(tok, _PROBE) != _CHATML:
        return False, None
    alone = _render(tok, [{"role": "user", "content": "U"}]) or ""
    m = _DEFAULT_SYSTEM.fullmatch(alone)
    return True, (m.group(1) if m else None)


def modelfile_text(tok, gguf_name: str) -> str:
    """An Ollama Modelfile for `gguf_name` (in the same folder), its chat format taken from `tok`."""
    is_chatml, system = chatml_default_system(tok)
    lines = ["# Ollama model file. In this folder run:", f"#   ollama create {Path(gguf_name).stem} -f Modelfile",
             f"#   ollama run {Path(gguf_name).stem}", "", f"FROM ./{gguf_name}", ""]
    if is_chatml:
        lines += ["# The model's chat template is ChatML; this is the same format in Ollama's template language.",
                  f'TEMPLATE """{OLLAMA_CHATML}"""']
        if system:
            lines += ["# The system prompt the model's own template adds when a chat has none.",
                      f'SYSTEM """{system}"""']
        lines += ['PARAMETER stop "<|im_start|>"']
    else:
        lines += ["# No TEMPLATE: the chat template is not ChatML, so Ollama uses the one embedded in the GGUF file."]
    stop = getattr(tok, "eos_token", None)
    if stop and (not is_chatml or stop != "<|im_start|>"):
        lines += [f'PARAMETER stop "{stop}"']
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the export


def _refuse_unconvertible(run: RunFolder) -> None:
    from finetuner.config import load_config

    name = load_config(run.config_path).model.name.strip()
    tiny = Path(__file__).resolve().parents[1] / "modeling" / "assets" / "tiny"
    if name.lower() == "tiny" or (Path(name).is_dir() and Path(name).resolve() == tiny.resolve()):
        raise ExportError("The built-in `tiny` model cannot become a GGUF: its character tokenizer is Finetuner's "
                          "own, and llama.cpp knows only the tokenizers of published models. Train on a real "
                          "model (e.g. `smollm2-135m`) to export GGUF; the adapter and merged exports work for tiny.")


def export_gguf(run: RunFolder, quant: str = "q8_0", progress=None) -> Path:
    """Merge the run's adapter, convert the merged model with llama.cpp's converter to
    export/gguf/<run id>-<quant>.gguf, write an Ollama Modelfile beside it; returns the .gguf path."""
    quant = (quant or "").strip().lower()
    if quant not in QUANTS:
        raise ExportError(f"GGUF quantization {quant!r} is not offered: choose one of {', '.join(QUANTS)} "
                          f"(all made from the merged model, which is bf16 for real models; q8_0 is near-lossless "
                          f"at half the size of f16).")
    _refuse_unconvertible(run)
    if missing := missing_packages():
        raise ExportError(f"GGUF export needs the Python package(s) {', '.join(missing)} (llama.cpp's converter "
                          f"imports them): install with `.venv/bin/pip install {' '.join(missing)}`.")
    say = _say(progress)
    script = converter_path(lambda f, text: say(0.05 * f, text))
    merged = export_merged(run, lambda f, text: say(0.05 + 0.45 * f, f"Merging: {text}"))
    out = export_dir(run) / "gguf" / f"{run.id}-{quant}.gguf"
    convert(merged, out, quant, lambda f, text: say(0.5 + 0.45 * f, text), script=script)
    from transformers import AutoTokenizer

    say(0.97, "Writing the Ollama Modelfile")
    tok = AutoTokenizer.from_pretrained(str(merged))
    (out.parent / "Modelfile").write_text(modelfile_text(tok, out.name), encoding="utf-8")
    say(1.0, "Done")
    return out
