"""Issue 12 item 4 on real model code paths: prompt-length limits measured with the real chat template,
`trust_remote_code` as an explicit opt-in for every load, and the merged export on CPU with its memory stated
first."""

import json
import shutil

import pytest

from graders.errors import ModelError

# ---------------------------------------------------------------- A: RFT prompt limit, real tokenizer


@pytest.mark.real
@pytest.mark.slow
def test_real_template_long_prompts_are_dropped(tmp_path, real_model, real_tok):
    """Counted with SmolLM2's ChatML template (its default system turn + the generation prompt), not the raw
    text: the limit sits above the long prompt's raw length, yet the long prompts are dropped."""
    from finetuner.config import from_dict
    from finetuner.data import load_stage_data

    short, long = "Hi.", "Explain in one word why the sky is blue, and nothing more please."
    raw = len(real_tok(long, add_special_tokens=False)["input_ids"])
    def seen(text):
        return len(real_tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                tokenize=True, return_dict=True)["input_ids"])

    limit = (seen(short) + seen(long)) // 2
    assert raw < limit and seen(short) <= limit < seen(long)  # the template is what puts the long one over
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in [short, long, short, long, long]))
    cfg = from_dict({"method": "rft", "model": {"name": real_model}, "data": {"train": str(data),
                     "eval_fraction": 0.0}, "graders": [{"name": "any", "type": "regex", "pattern": "."}],
            "rft": {"max_prompt_length": limit}}, base_dir=str(tmp_path))
    out = load_stage_data(cfg, "rft", real_tok)
    assert len(out.train) == 2 and out.dropped_long_prompts == 3
    assert [r["prompt"][-1]["content"] for r in out.train] == [short, short]


# ---------------------------------------------------------------- C: trust_remote_code

CUSTOM = '''from transformers import LlamaConfig, LlamaForCausalLM


class CustomConfig(LlamaConfig):
    model_type = "custom_tinyllama"


class CustomForCausalLM(LlamaForCausalLM):
    config_class = CustomConfig
    custom_marker = "loaded from the folder's own code"
'''


@pytest.fixture
def remote_code_folder(tmp_path):
    from finetuner.modeling.tiny import tiny_path

    folder = tmp_path / "custom-model"
    shutil.copytree(tiny_path(), folder)
    (folder / "custom_tinyllama.py").write_text(CUSTOM)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="custom_tinyllama", architectures=["CustomForCausalLM"],
                  auto_map={"AutoConfig": "custom_tinyllama.CustomConfig",
                            "AutoModelForCausalLM": "custom_tinyllama.CustomForCausalLM"})
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def test_remote_code_needs_the_opt_in(remote_code_folder):
    from finetuner.modeling.load import load_model

    with pytest.raises(ModelError, match=r"model.trust_remote_code: true"):
        load_model(remote_code_folder, "none", trust_remote_code=False)
    model, tok, _ = load_model(remote_code_folder, "none", trust_remote_code=True)
    assert type(model).__name__ == "CustomForCausalLM" and model.custom_marker.startswith("loaded")


def test_a_run_with_remote_code_is_warned(tmp_path, caplog):
    from finetuner.config import from_dict
    from finetuner.training.stages import _prepare

    data = tmp_path / "t.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Add {i} and 1.", "completion": "x"}) + "\n" for i in range(4)))
    cfg = from_dict({"method": "sft", "model": {"name": "tiny", "trust_remote_code": True},
                     "data": {"train": str(data)}}, base_dir=str(tmp_path))
    notices: list[str] = []
    with caplog.at_level("WARNING"):
        _prepare(cfg, ["sft"], notices)
    assert any("model code from tiny will run on this machine" in n for n in notices)
    assert "model code from tiny will run on this machine" in caplog.text


# ---------------------------------------------------------------- D: merged export on CPU


def _run_with_adapter(tmp_path, model_name: str, random_adapter: bool):
    """A run folder whose adapter/ is a LoRA made here (random B when asked, so merging changes the model)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from finetuner.config import from_dict, save_config
    from finetuner.modeling.load import resolve_model_path
    from finetuner.runs import new_run

    cfg = from_dict({"method": "sft", "model": {"name": model_name}, "data": {"train": "x.jsonl"}},
                    base_dir=str(tmp_path))
    run = new_run(tmp_path / "runs", "mergecpu")
    save_config(cfg, run.config_path)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path(model_name), dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=not random_adapter)
    get_peft_model(base, lora).save_pretrained(str(run.adapter))
    return run


def test_merge_refuses_when_memory_is_short(tmp_path, monkeypatch):
    from finetuner.runs import export

    run = _run_with_adapter(tmp_path, "tiny", random_adapter=False)
    monkeypatch.setattr(export, "available_memory", lambda: 1 << 20)
    said = []
    with pytest.raises(export.ExportError, match="memory"):
        export.export_merged(run, progress=lambda f, text: said.append(text))
    assert any("GB" in text and "memory" in text for text in said)
    assert not (run.path / "export" / "merged").exists()


@pytest.mark.real
@pytest.mark.slow
def test_real_merge_runs_on_cpu_in_bf16(tmp_path, monkeypatch, real_model):
    """The base loads on the CPU in bf16 and nothing is ever moved to a GPU (the export asks for the CPU itself,
    rather than the training plan that picks the GPU when there is one), the memory needed is said first, and
    the merged weights answer as base + adapter within bf16 rounding."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from finetuner.runs import export

    run = _run_with_adapter(tmp_path, "smollm2-135m", random_adapter=True)
    loaded = []
    real_load = export._load_base

    def spy(*args, **kwargs):
        model, tok = real_load(*args, **kwargs)
        loaded.append((str(next(model.parameters()).device), next(model.parameters()).dtype))
        return model, tok

    monkeypatch.setattr(export, "_load_base", spy)
    moves = []
    real_to = torch.nn.Module.to

    def to(self, *args, **kwargs):
        moves.append(str(args[0] if args else kwargs.get("device")))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", to)
    monkeypatch.setattr(torch.nn.Module, "cuda", lambda self, *a, **k: moves.append("cuda") or self)
    said = []
    folder = export.export_merged(run, progress=lambda f, text: said.append(text))
    monkeypatch.undo()
    assert loaded == [("cpu", torch.bfloat16)]
    assert not any("cuda" in m for m in moves), moves
    assert "GB" in said[0] and "memory" in said[0] and "bf16" in said[0]
    assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
    merged = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(real_model, dtype=torch.float32)
    ids = torch.tensor([[1, 504, 3458, 314, 253, 1345, 28, 2111]])
    with torch.no_grad():
        plain = base(ids).logits
        peft = PeftModel.from_pretrained(base, str(run.adapter)).eval()
        wanted = peft(ids).logits
        got = merged(ids).logits
    adapter_effect = (wanted - plain).abs().mean()
    assert adapter_effect > 0.05  # the adapter really changes the model
    assert (got - wanted).abs().mean() < 0.25 * adapter_effect  # merged = base + adapter, up to bf16 rounding
