"""GGUF export: quantization choices, the Ollama Modelfile, llama.cpp's converter fetched, unpacked and run (its
failures explained), tiny refused; and on the real model a round trip: the f16 GGUF, read back by transformers,
answers exactly as the merged model does."""

import io
import os
import tarfile
import textwrap
from pathlib import Path

import pytest

from finetuner.runs import RunFolder, new_run
from finetuner.runs import export_gguf as eg
from finetuner.runs.export import ExportError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "arithmetic"


def _run_with_model(tmp_path, model_name: str) -> RunFolder:
    from finetuner.config import from_dict, load_config, portable_config, save_config, to_dict

    spec = to_dict(load_config(EXAMPLE / "run.yaml"))
    spec["method"] = "sft"
    spec["model"]["name"] = model_name
    run = new_run(tmp_path / "runs", "gguf")
    save_config(portable_config(from_dict(spec, base_dir=str(EXAMPLE))), run.config_path)
    return run


def test_unknown_quantization_is_refused_naming_the_choices(tmp_path):
    with pytest.raises(ExportError) as err:
        eg.export_gguf(RunFolder(tmp_path), "q4_k_m")
    assert "'q4_k_m'" in str(err.value) and "q8_0, f16, bf16 (" in str(err.value)
    with pytest.raises(ExportError, match="'f32' is not offered"):  # it would only be the bf16 merge upcast
        eg.export_gguf(RunFolder(tmp_path), "f32")


def test_tiny_is_refused_before_merging(tmp_path):
    run = _run_with_model(tmp_path, "tiny")
    with pytest.raises(ExportError, match="tiny.*cannot become a GGUF.*smollm2-135m"):
        eg.export_gguf(run, "f16")
    assert not (run.path / "export" / "merged").exists()


def test_runs_tab_gguf_refusal_is_a_toast_not_a_traceback(tmp_path):
    from finetuner.ui import tab_runs
    from finetuner.ui.context import AppContext, safe

    run = _run_with_model(tmp_path, "tiny")
    ctx = AppContext(run.path.parent)
    with pytest.raises(ExportError, match="tiny"):
        tab_runs.make_gguf(ctx, run.id, "q8_0", progress=lambda f, desc: None)
    assert safe(tab_runs.make_gguf)(ctx, run.id, "q8_0", progress=lambda f, desc: None) == {"__type__": "update"}


def test_modelfile_for_a_chatml_tokenizer(gen_tok):
    text = eg.modelfile_text(gen_tok, "run1-q8_0.gguf")
    assert "FROM ./run1-q8_0.gguf\n" in text
    assert "#   ollama create run1-q8_0 -f Modelfile" in text
    assert f'TEMPLATE """{eg.OLLAMA_CHATML}"""' in text
    assert 'PARAMETER stop "<|im_end|>"' in text and 'PARAMETER stop "<|im_start|>"' in text
    assert "SYSTEM" not in text  # the tiny template adds no system prompt of its own


def test_modelfile_keeps_a_template_default_system_prompt(gen_tok):
    import copy

    tok = copy.deepcopy(gen_tok)  # a copy: the session fixture is left as it is
    tok.chat_template = ("{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nBe brief.<|im_end|>\n' }}"
                         "{% endif %}" + gen_tok.chat_template)
    assert eg.chatml_default_system(tok) == (True, "Be brief.")
    assert 'SYSTEM """Be brief."""' in eg.modelfile_text(tok, "m.gguf")


def test_modelfile_for_another_template_leaves_the_gguf_one(gen_tok):
    import copy

    tok = copy.deepcopy(gen_tok)
    tok.chat_template = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}[assistant] {% endif %}")
    text = eg.modelfile_text(tok, "m.gguf")
    assert "TEMPLATE" not in text.replace("No TEMPLATE", "")
    assert "No TEMPLATE" in text and "embedded in the GGUF" in text
    assert 'PARAMETER stop "<|im_end|>"' in text  # the eos token still ends a reply


def _fake_converter(folder: Path, body: str) -> Path:
    (folder / "gguf-py" / "gguf").mkdir(parents=True)
    (folder / "gguf-py" / "gguf" / "__init__.py").write_text("WHOSE = 'the converter s own gguf'\n")
    script = folder / "convert_hf_to_gguf.py"
    script.write_text(textwrap.dedent(body))
    return script


def test_a_failing_conversion_says_why_with_its_last_lines(tmp_path):
    script = _fake_converter(tmp_path / "conv", """
        import sys
        import gguf
        print("INFO:hf-to-gguf:blk.0.attn_q.weight, torch.float32 --> F16")
        print("using", gguf.WHOSE)
        print("NotImplementedError: BPE pre-tokenizer was not recognized - update get_vocab_base_pre()")
        sys.exit(1)
    """)
    model = tmp_path / "merged"
    model.mkdir()
    (model / "config.json").write_text('{"num_hidden_layers": 2}')
    seen = []
    out = tmp_path / "gguf" / "x-f16.gguf"
    with pytest.raises(ExportError) as err:
        eg.convert(model, out, "f16", lambda f, text: seen.append(f), script=script)
    msg = str(err.value)
    assert "does not know this model's tokenizer" in msg and "exit code 1" in msg
    assert "using the converter s own gguf" in msg  # PYTHONPATH put its gguf-py first, not the app's gguf
    assert seen == [0.5]  # layer 1 of 2 was reported
    assert not any((tmp_path / "gguf").iterdir())  # nothing half-written is left to look like an export


# Records its argv and cwd, then writes the --outfile it was given (from its own cwd, as the real one does).
RECORDER = """
    import json, os, sys, time
    out = sys.argv[sys.argv.index("--outfile") + 1]
    json.dump({"argv": sys.argv, "cwd": os.getcwd(), "pid": os.getpid()}, open(%r, "w"))
    print("INFO:hf-to-gguf:blk.0.attn_q.weight, torch.bfloat16 --> F16", flush=True)
    time.sleep(%s)
    open(out, "wb").write(b"GGUF")
"""


def _model_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"num_hidden_layers": 2}')
    return path


def test_relative_paths_reach_the_converter_absolute(tmp_path, monkeypatch):
    import json

    record = tmp_path / "record.json"
    script = _fake_converter(tmp_path / "conv", RECORDER % (str(record), 0))
    monkeypatch.chdir(tmp_path)
    _model_folder(tmp_path / "runs" / "r1" / "export" / "merged")
    out = eg.convert(Path("runs/r1/export/merged"), Path("runs/r1/export/gguf/r1-f16.gguf"), "f16", script=script)
    seen = json.loads(record.read_text())
    assert seen["cwd"] == str(script.parent)  # the converter runs in its own folder, away from our cwd
    assert seen["argv"][1] == str(tmp_path / "runs" / "r1" / "export" / "merged")
    assert seen["argv"][3] == str(tmp_path / "runs" / "r1" / "export" / "gguf" / "r1-f16.partial.gguf")
    assert out == tmp_path / "runs" / "r1" / "export" / "gguf" / "r1-f16.gguf" and out.read_bytes() == b"GGUF"


def test_a_raising_progress_callback_stops_the_converter(tmp_path):
    import json

    record = tmp_path / "record.json"
    script = _fake_converter(tmp_path / "conv", RECORDER % (str(record), 60))

    def cancel(fraction, text):
        raise KeyboardInterrupt  # what Ctrl-C (or a Gradio cancel) does inside the read loop

    out = tmp_path / "gguf" / "x-f16.gguf"
    with pytest.raises(KeyboardInterrupt):
        eg.convert(_model_folder(tmp_path / "merged"), out, "f16", cancel, script=script)
    pid = json.loads(record.read_text())["pid"]
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left sleeping then writing the file
        os.kill(pid, 0)
    assert not any(out.parent.iterdir())


def test_a_pip_download_that_hangs_is_an_export_error(tmp_path, monkeypatch):
    import subprocess

    def hang(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, kw.get("timeout"))

    monkeypatch.setenv("FINETUNER_CACHE", str(tmp_path))
    monkeypatch.setattr(eg.subprocess, "run", hang)
    with pytest.raises(ExportError, match="took over 30 minutes") as err:
        eg.converter_path()
    assert str(tmp_path / "downloads") in str(err.value)
    assert os.listdir(tmp_path / "downloads") == []  # the partial download folder is gone


def test_a_package_with_a_path_out_of_the_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNER_CACHE", str(tmp_path / "cache"))
    sdist = _sdist(tmp_path / "cache" / "downloads" / eg.SDIST)
    with tarfile.open(sdist, "r:gz") as tar:
        kept = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(sdist, "w:gz") as tar:
        for m, data in kept:
            tar.addfile(m, io.BytesIO(data))
        evil = tarfile.TarInfo(f"llama_cpp_python-{eg.LLAMA_CPP_PYTHON}/vendor/llama.cpp/conversion/../../escaped.py")
        evil.size = 1
        tar.addfile(evil, io.BytesIO(b"#"))
    with pytest.raises(ExportError, match="outside the folder"):
        eg.converter_path()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["downloads"]  # nothing unpacked


def _sdist(path: Path) -> Path:
    """A stand-in for the llama-cpp-python source package: the converter's files and some it does not need."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name in ("convert_hf_to_gguf.py", "conversion/__init__.py", "gguf-py/gguf/__init__.py", "LICENSE",
                     "ggml/src/ggml.c", "convert_lora_to_gguf.py"):
            data = f"# {name}\n".encode()
            info = tarfile.TarInfo(f"llama_cpp_python-{eg.LLAMA_CPP_PYTHON}/vendor/llama.cpp/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_converter_is_unpacked_from_the_source_package_once(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNER_CACHE", str(tmp_path))
    _sdist(tmp_path / "downloads" / eg.SDIST)
    script = eg.converter_path()
    assert script == tmp_path / f"llama.cpp-convert-{eg.LLAMA_CPP_PYTHON}" / "convert_hf_to_gguf.py"
    files = sorted(str(p.relative_to(script.parent)) for p in script.parent.rglob("*") if p.is_file())
    assert files == ["LICENSE", "conversion/__init__.py", "convert_hf_to_gguf.py", "gguf-py/gguf/__init__.py"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloads", script.parent.name]  # no partial folder
    (tmp_path / "downloads" / eg.SDIST).unlink()
    assert eg.converter_path() == script  # extracted once: the package is no longer needed


def test_pypi_unreachable_says_where_to_put_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNER_CACHE", str(tmp_path / "cache"))
    # pip with no index and an empty links folder fails at once, like a machine that cannot reach PyPI.
    (tmp_path / "nolinks").mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nolinks"))
    with pytest.raises(ExportError) as err:
        eg.converter_path()
    msg = str(err.value)
    assert "Cannot download llama.cpp's converter from PyPI" in msg
    assert eg.SDIST in msg and str(tmp_path / "cache" / "downloads") in msg
    assert os.listdir(tmp_path / "cache" / "downloads") == []


# ------------------------------------------------------------------ real model round trip

PROMPTS = ["What is the capital of France?", "Write a haiku about rain.", "List three prime numbers."]


@pytest.fixture(scope="module")
def real_run(real_model, tmp_path_factory):
    """A run on smollm2-135m whose adapter is a fresh LoRA with random (nonzero) B weights: no training needed
    for the merge to change the weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = _run_with_model(tmp_path_factory.mktemp("gguf"), "smollm2-135m")
    base = AutoModelForCausalLM.from_pretrained(real_model, dtype=torch.float32)
    torch.manual_seed(0)  # before get_peft_model: its lora_A init is random too, so the effect is the same each run
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                            task_type="CAUSAL_LM"))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # large enough to change greedy answers (0.02 did only on some draws)
            torch.nn.init.normal_(param, std=0.1)
    model.save_pretrained(str(run.adapter))
    return run


def _answers(folder, gguf_file=None, tok_folder=None):
    """Greedy answers of a model folder (or a GGUF file in it), with its own tokenizer unless `tok_folder`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetuner.modeling.generate import generate

    kw = {"gguf_file": gguf_file} if gguf_file else {}
    # Reading a GGUF's tokenizer parses its whole vocabulary in Python (~15 s): done once, in the f16 test.
    tok = AutoTokenizer.from_pretrained(str(tok_folder)) if tok_folder else AutoTokenizer.from_pretrained(
        str(folder), **kw)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype="float32", **kw).eval()
    return generate(model, tok, PROMPTS, max_new_tokens=12)


@pytest.mark.real
@pytest.mark.slow
def test_f16_gguf_answers_as_the_merged_model(real_run, real_model):
    seen = []
    path = eg.export_gguf(real_run, "f16", lambda f, text: seen.append(f))
    assert path == real_run.path / "export" / "gguf" / f"{real_run.id}-f16.gguf" and path.stat().st_size > 2e8
    assert seen[-1] == 1.0 and seen == sorted(seen)
    merged = _answers(real_run.path / "export" / "merged")
    assert merged != _answers(real_model), "the adapter changes nothing, so this test could not fail"
    assert _answers(path.parent, path.name) == merged
    modelfile = (path.parent / "Modelfile").read_text()
    assert f"FROM ./{path.name}" in modelfile and "TEMPLATE" in modelfile
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in modelfile  # SmolLM2's default system
    assert 'PARAMETER stop "<|im_end|>"' in modelfile


@pytest.mark.real
@pytest.mark.slow
def test_q8_0_gguf_loads_and_generates(real_run):
    from finetuner.ui import tab_runs
    from finetuner.ui.context import AppContext

    shown, msg = tab_runs.make_gguf(AppContext(real_run.path.parent), real_run.id, "q8_0",
                                    progress=lambda f, desc: None)
    path = Path(shown)
    assert f"ollama create {path.stem} -f Modelfile" in msg and str(path.parent) in msg
    assert path.name == f"{real_run.id}-q8_0.gguf" and 1e8 < path.stat().st_size < 2e8  # about half of f16
    out = _answers(path.parent, path.name, tok_folder=real_run.path / "export" / "merged")
    assert all(isinstance(a[0], str) and a[0].strip() for a in out)
