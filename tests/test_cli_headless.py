"""`python -m finetuner evaluate / export / chat`: the Evaluate and Runs tabs, headless.

The trained run is test_evaluate's (tiny model, SFT 4 + RFT 3 steps, trained once per session and shared with
test_export); the verbs run in-process through cli.main, and one through a real `python -m finetuner`.
"""

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from finetuner import cli
from finetuner.runs import RunFolder

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run():
    from test_evaluate import trained_run

    return trained_run()


def _bare_run(tmp_path, with_adapter: bool = False) -> RunFolder:
    """A run folder with a config and no training: enough for the verbs' argument and error paths."""
    run = RunFolder(tmp_path / "runs" / "bare-run")
    run.path.mkdir(parents=True)
    run.config_path.write_text("name: x\nmethod: sft\nmodel: {name: tiny}\ndata: {train: x.jsonl}\n")
    run.write_status(state="finished", method="sft", stages=["sft"])
    if with_adapter:
        run.adapter.mkdir()
        (run.adapter / "adapter_config.json").write_text("{}")
    return run


def test_help_lists_the_new_verbs_with_their_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for verb, words in (("evaluate", "held-out rows"), ("export", "merged model"), ("chat", "tuned model")):
        line = next(line for line in out.splitlines() if line.strip().startswith(verb + " "))
        assert words in line


def test_export_needs_exactly_one_kind(tmp_path, capsys):
    run = _bare_run(tmp_path)
    with pytest.raises(SystemExit) as none:
        cli.main(["export", str(run.path)])
    with pytest.raises(SystemExit) as two:
        cli.main(["export", str(run.path), "--adapter", "--bundle"])
    assert none.value.code == two.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_export_without_adapter_exits_2_with_a_clear_message_in_a_real_process(tmp_path):
    run = _bare_run(tmp_path)
    # by run id inside --runs-dir, as `stop` finds runs
    proc = subprocess.run([sys.executable, "-m", "finetuner", "export", run.id, "--runs-dir", str(run.path.parent),
                           "--adapter"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "has no trained adapter yet" in proc.stderr and "Traceback" not in proc.stderr
    assert not (run.path / "export" / f"{run.id}-adapter.zip").exists()


def test_evaluate_of_an_untrained_run_exits_2(tmp_path, capsys):
    run = _bare_run(tmp_path)
    assert cli.main(["evaluate", str(run.path), "--json"]) == 2
    assert "no trained adapter" in capsys.readouterr().err


def test_chat_loop_keeps_history_resets_and_ends(tmp_path, monkeypatch, capsys):
    """The loop itself, with the model replaced by a recorder: history grows, /reset empties it, /quit ends."""
    from finetuner.evaluation import heldout

    run = _bare_run(tmp_path, with_adapter=True)
    seen = []

    def fake_reply(model, adapter, history, temperature, max_new_tokens, quantization, trust, template_kwargs=None,
                   tools=None, max_calls=3):
        seen.append((adapter, [m["content"] for m in history]))
        return f"reply {len(seen)}"

    monkeypatch.setattr(heldout, "chat_reply", fake_reply)
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n\nagain\n/reset\nfresh\n/quit\nnever read\n"))
    assert cli.main(["chat", str(run.path), "--temperature", "0"]) == 0
    assert [h for _a, h in seen] == [["hi"], ["hi", "reply 1", "again"], ["fresh"]]
    assert seen[0][0] == str(run.adapter)
    assert capsys.readouterr().out.splitlines() == ["model> reply 1", "model> reply 2", "model> reply 3"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("base?\n"))  # EOF ends it too
    assert cli.main(["chat", str(run.path), "--base"]) == 0
    assert seen[-1] == (None, ["base?"])


@pytest.mark.slow
def test_evaluate_json_last_line_is_the_saved_results(run, capsys):
    assert cli.main(["evaluate", str(run.path), "--rows", "4", "--json"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    last = json.loads(lines[-1])
    assert last == json.loads((run.eval_dir / "results.json").read_text())
    assert last["rows"] == 4 and set(last["models"]) == {"base", "sft", "rft"}
    assert set(last["models"]["rft"]["scores"]) == {"correct", "format"}
    # the readable table: a header with the graders and their weights, one line per model variant
    header = next(i for i, line in enumerate(lines) if line.startswith("model "))
    assert "correct (×1)" in lines[header] and "format (×0.1)" in lines[header]
    assert [lines[header + 2 + i].split("  ")[0] for i in range(3)] == ["Base model", "After SFT", "After RFT"]
    assert "100%" in captured.err  # progress goes to stderr, so stdout's last line stays the JSON


@pytest.mark.slow
def test_export_adapter_and_merged_by_run_id(run, capsys):
    from transformers import AutoModelForCausalLM

    runs_dir = str(run.path.parent)
    assert cli.main(["export", run.id, "--runs-dir", runs_dir, "--adapter"]) == 0
    path = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert path == run.path / "export" / f"{run.id}-adapter.zip"
    assert f"{run.id}-adapter/adapter_config.json" in zipfile.ZipFile(path).namelist()

    assert cli.main(["export", run.id, "--runs-dir", runs_dir, "--merged", "--json"]) == 0
    made = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert made["kind"] == "merged" and Path(made["path"]) == run.path / "export" / "merged"
    model = AutoModelForCausalLM.from_pretrained(made["path"])
    assert not any("lora" in name for name, _ in model.named_parameters())


@pytest.mark.slow
def test_chat_with_the_tuned_model_from_piped_stdin(run, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is 2+3?\n/quit\n"))
    assert cli.main(["chat", str(run.path), "--temperature", "0", "--max-new-tokens", "12"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("model> ") and out[0][len("model> "):].strip()


def test_export_gguf_of_a_relative_run_folder(tmp_path, monkeypatch, capsys):
    """`export runs/<id> --gguf` from the folder above runs/: the converter (a stand-in that writes its
    --outfile from its own cwd, as llama.cpp's does) must still find the merged model and write the file."""
    import shutil

    from finetuner.runs import export_gguf as eg

    run = _bare_run(tmp_path, with_adapter=True)
    conv = tmp_path / "conv"
    (conv / "gguf-py").mkdir(parents=True)
    (conv / "convert_hf_to_gguf.py").write_text(
        "import pathlib, sys\nassert (pathlib.Path(sys.argv[1]) / 'config.json').is_file(), sys.argv[1]\n"
        "pathlib.Path(sys.argv[sys.argv.index('--outfile') + 1]).write_bytes(b'GGUF')\n")

    def fake_merge(r, progress=None):  # the tiny model's files stand in for a merge (tiny itself is refused)
        shutil.copytree(ROOT / "finetuner" / "modeling" / "assets" / "tiny", r.path / "export" / "merged")
        return r.path / "export" / "merged"

    monkeypatch.setattr(eg, "_refuse_unconvertible", lambda r: None)
    monkeypatch.setattr(eg, "missing_packages", lambda: [])
    monkeypatch.setattr(eg, "converter_path", lambda progress=None: conv / "convert_hf_to_gguf.py")
    monkeypatch.setattr(eg, "export_merged", fake_merge)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["export", "runs/bare-run", "--gguf", "--quant", "f16"]) == 0
    made = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert not made.is_absolute()  # the run folder stayed relative all the way down
    assert (tmp_path / made).read_bytes() == b"GGUF" and made.name == "bare-run-f16.gguf"
    assert "FROM ./bare-run-f16.gguf" in (tmp_path / made).with_name("Modelfile").read_text()
