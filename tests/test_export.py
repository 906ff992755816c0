"""Exports of a real run: adapter zip, merged model that loads and generates, reproducible bundle without
secrets, Hub push failing clearly offline; and the Runs tab's export handlers."""

import os
import shutil
import zipfile

import pytest
import yaml
from test_evaluate import trained_run

from finetuner.runs import export
from finetuner.runs import RunFolder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run():
    return trained_run()


def test_adapter_zip_holds_the_peft_adapter(run):
    path = export.export_adapter(run)
    assert path == run.path / "export" / f"{run.id}-adapter.zip"
    names = zipfile.ZipFile(path).namelist()
    assert f"{run.id}-adapter/adapter_config.json" in names
    assert f"{run.id}-adapter/adapter_model.safetensors" in names


def test_merged_model_loads_and_generates(run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetuner.modeling.generate import generate

    seen = []
    folder = export.export_merged(run, progress=lambda f, text: seen.append(f))
    assert folder == run.path / "export" / "merged" and seen[-1] == 1.0
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    tok = AutoTokenizer.from_pretrained(str(folder))
    assert not any("lora" in name for name, _ in model.named_parameters())  # merged, not wrapped
    out = generate(model, tok, ["What is 12+30?"], max_new_tokens=8)
    assert isinstance(out[0][0], str) and out[0][0]


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    """SFT alone, 8 steps at a learning rate (1e-2) that moves the adapter far enough to change greedy answers:
    the shared run's 4 steps at 1e-3 leave them as the base's."""
    from test_evaluate import EXAMPLE

    from finetuner.config import from_dict, load_config, portable_config, save_config, to_dict
    from finetuner.runs import new_run
    from finetuner.training.stages import train_run

    spec = to_dict(load_config(EXAMPLE / "run.yaml"))
    spec["method"] = "sft"
    spec["sft"].update(max_steps=8, batch_size=8, learning_rate=1e-2, save_steps=100)
    cfg = from_dict(spec, base_dir=str(EXAMPLE))
    folder = new_run(tmp_path_factory.mktemp("runs"), "mergetest")
    save_config(portable_config(cfg), folder.config_path)
    status = train_run(cfg, folder)
    assert status["state"] == "finished", status.get("error")
    return folder


def test_merged_model_answers_as_base_plus_adapter(sft_run):
    """Greedy output of the merged folder equals base + the run's adapter (PEFT) on held-out prompts; and the
    adapter really changes the base's output, so a merge that dropped (or half-applied) it fails here."""
    import json
    from pathlib import Path

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetuner.modeling.generate import generate
    from finetuner.modeling.load import resolve_model_path

    lines = (Path(__file__).resolve().parents[1] / "examples" / "arithmetic" / "eval.jsonl").read_text().splitlines()
    prompts = [json.loads(line)["prompt"] for line in lines[:5]]
    run = sft_run
    folder = export.export_merged(run)
    tok = AutoTokenizer.from_pretrained(str(folder))  # the base's tokenizer, saved with the merged weights
    merged = AutoModelForCausalLM.from_pretrained(str(folder), dtype="float32").eval()
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path("tiny"), dtype="float32").eval()
    before = generate(base, tok, prompts, max_new_tokens=12)
    # PeftModel wraps `base` in place, so the base's own answers are taken first.
    tuned = PeftModel.from_pretrained(base, str(export.final_adapter(run))).eval()
    expected = generate(tuned, tok, prompts, max_new_tokens=12)
    assert generate(merged, tok, prompts, max_new_tokens=12) == expected
    assert expected != before, f"the adapter changes nothing, so this test could not fail: {before}"


def _secret_copy(run: RunFolder, tmp_path) -> RunFolder:
    """A copy of the run whose config carries secrets in the places people paste them."""
    copy = RunFolder(tmp_path / run.id)
    shutil.copytree(run.path, copy.path, ignore=shutil.ignore_patterns("checkpoints", "export"))
    spec = yaml.safe_load(copy.config_path.read_text())
    spec["graders"].append({"name": "judge", "type": "score_model", "input": "{{sample.output_text}}",
                            "model": "gpt-4o-mini", "api_key_env": "OPENAI_API_KEY",
                            "api_key": "sk-live-SECRET1234567890",
                            "base_url": "https://x.example/v1?key=sk-abcdefghijklmnopqrstuvwx",
                            "headers": {"Authorization": "Bearer hf_ABCDEFGHIJKLMNOPQRSTUVWX"},
                            "sampling_params": {"max_tokens": 5}})
    spec["hf_token"] = "hf_ABCDEFGHIJKLMNOPQRSTUVWXyz"
    copy.config_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return copy


def test_bundle_has_config_data_commands_and_no_secrets(run, tmp_path):
    copy = _secret_copy(run, tmp_path)
    (copy.eval_dir).mkdir(exist_ok=True)
    (copy.eval_dir / "results.json").write_text('{"models": {}}')
    path = export.export_bundle(copy)
    zf = zipfile.ZipFile(path)
    root = f"{copy.id}-bundle"
    names = set(zf.namelist())
    assert {f"{root}/run.yaml", f"{root}/README.md", f"{root}/data/train.jsonl", f"{root}/data/prompts.jsonl",
            f"{root}/data/eval.jsonl", f"{root}/results/results.json"} <= names
    spec = yaml.safe_load(zf.read(f"{root}/run.yaml"))
    assert spec["data"]["train"] == "data/train.jsonl" and spec["data"]["rft_train"] == "data/prompts.jsonl"
    judge = spec["graders"][-1]
    assert judge["api_key_env"] == "OPENAI_API_KEY" and "api_key" not in judge and judge["headers"] == {}
    assert judge["sampling_params"] == {"max_tokens": 5} and "hf_token" not in spec
    readme = zf.read(f"{root}/README.md").decode()
    assert "python -m finetuner train path/to/this-bundle/run.yaml" in readme
    assert "accelerate launch -m finetuner train path/to/this-bundle/run.yaml" in readme
    everything = b"".join(zf.read(n) for n in names)
    for secret in (b"sk-live-SECRET", b"sk-abcdefghijklmnop", b"hf_ABCDEFGHIJ"):
        assert secret not in everything
    # the bundle trains as it is: its config loads with the data next to it
    out = tmp_path / "unzipped"
    zf.extractall(out)
    from finetuner.config import load_config

    cfg = load_config(out / root / "run.yaml")
    assert os.path.isfile(cfg.resolve(cfg.data.train))


def test_bundle_readme_commands_install_from_the_project_and_train(run, tmp_path):
    """The README's commands, run as written (placeholders filled in), train the bundle; and it never tells
    anyone to install `finetuner` from PyPI, where that name is an unrelated package."""
    import subprocess
    import sys
    from pathlib import Path

    zf = zipfile.ZipFile(export.export_bundle(run))
    root = f"{run.id}-bundle"
    zf.extractall(tmp_path)
    readme = zf.read(f"{root}/README.md").decode()
    assert "pip install finetuner" not in readme and "bash scripts/setup.sh" in readme
    project = Path(__file__).resolve().parents[1]
    assert (project / "scripts" / "setup.sh").is_file()  # what "cd path/to/finetuner" must find
    train = next(ln for ln in readme.splitlines() if " -m finetuner train " in ln and "accelerate" not in ln)
    command = train.replace(export.BUNDLE_PLACEHOLDER, str(tmp_path / root)).split()
    if not (project / command[0]).exists():  # a checkout tested with another interpreter than its .venv
        command[0] = sys.executable
    command += ["--runs-dir", str(tmp_path / "runs"), "--set", "sft.max_steps=1", "--set", "rft.max_steps=1"]
    done = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "finished" in done.stdout
    metrics = next((tmp_path / "runs").glob("*/metrics.jsonl")).read_text()
    assert '"loss"' in metrics  # it really trained, on the bundle's own data
    launcher = next(ln for ln in readme.splitlines() if "accelerate launch" in ln and "-m finetuner" in ln)
    assert (Path(sys.executable).parent / "accelerate").exists() and launcher.startswith(".venv/bin/accelerate")


def test_hub_push_offline_says_so_and_never_leaks_the_token(run, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    token = "hf_THISISATESTTOKEN0123456789"
    with pytest.raises(export.ExportError) as err:
        export.push_to_hub(run, "someone/model", token)
    assert "offline" in str(err.value).lower() and token not in str(err.value)
    with pytest.raises(export.ExportError, match="owner/name"):
        export.push_to_hub(run, "no-slash", token)
    with pytest.raises(export.ExportError, match="token"):
        export.push_to_hub(run, "someone/model", " ")
    assert token not in "".join(p.read_text(errors="ignore") for p in run.path.rglob("*") if p.is_file()
                                and p.suffix in (".json", ".yaml", ".txt", ".jsonl"))


def test_runs_tab_export_handlers(run):
    from finetuner.ui import tab_runs
    from finetuner.ui.context import AppContext

    ctx = AppContext(run.path.parent)
    path, msg = tab_runs.export_adapter(ctx, run.id)
    assert path.endswith("-adapter.zip") and "Adapter saved" in msg
    path, msg = tab_runs.export_bundle(ctx, run.id)
    assert path.endswith("-bundle.zip") and "accelerate launch" in msg
    # Offline (the tests' default), a push fails with a message; through `safe` the page gets a toast, no traceback.
    from finetuner.ui.context import safe

    with pytest.raises(export.ExportError, match="Hub"):
        tab_runs.push(ctx, run.id, "me/x", "hf_" + "x" * 24, "adapter", True)
    assert safe(tab_runs.push)(ctx, run.id, "me/x", "hf_" + "x" * 24, "adapter", True) == {"__type__": "update"}
