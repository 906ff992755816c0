"""Take a run's result out of Finetuner: the adapter, a merged model, a Hub upload, a reproducible bundle.

    export_adapter(run)                 # runs/<id>/export/<id>-adapter.zip
    export_merged(run)                  # runs/<id>/export/merged/ (base weights + adapter, one model)
    push_to_hub(run, "me/model", token) # uploads the adapter (or the merged folder); the token is not stored
    export_bundle(run)                  # runs/<id>/export/<id>-bundle.zip: run.yaml, data, graders, README

The bundle is what someone else needs to train the same run again: the config with its absolute paths made
relative to the bundle, the data and grader files it names, and the commands. Secrets never go in: fields
that look like keys, tokens or passwords are dropped (only `api_key_env`, the *name* of an environment
variable, is kept).
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

import yaml

from finetuner.config import yaml_text
from graders.errors import FinetunerError, RunError
from finetuner.runs import ACTIVE_STATES, RunFolder, refresh_state

# Field names that hold credentials: `api_key`, `hf_token`, `client_secret`, `Authorization`... but not
# `max_tokens` or `tokenizer`, which are settings.
SECRET_KEY = re.compile(r"^(.*[_-])?(api[_-]?key|apikey|token|access[_-]?key|secret|password|passwd|"
                        r"authorization|bearer|credentials?)$", re.I)
# Values that look like a provider's key, wherever they were pasted (a URL, a header, a template).
SECRET_VALUE = re.compile(r"\b(sk-[A-Za-z0-9_-]{16,}|hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|"
                          r"AKIA[0-9A-Z]{16}|xox[abp]-[A-Za-z0-9-]{10,})")
KEEP_KEYS = {"api_key_env"}  # names of environment variables, not their values
FILE_KEYS = ("file", "schema_file")  # grader fields that name a file to ship with the bundle
BUNDLE_PLACEHOLDER = "path/to/this-bundle"  # where the README's commands name the unzipped bundle


class ExportError(FinetunerError):
    """An export cannot be made as asked (no adapter yet, the Hub unreachable, ...)."""


def export_dir(run: RunFolder) -> Path:
    path = run.path / "export"
    path.mkdir(exist_ok=True)
    return path


def final_adapter(run: RunFolder) -> Path:
    """The run's most trained adapter: adapter/ when the run saved one, else the last finished stage's."""
    if (run.adapter / "adapter_config.json").exists():
        return run.adapter
    for stage in ("rft", "sft"):
        if (run.stage_adapter(stage) / "adapter_config.json").exists():
            return run.stage_adapter(stage)
    raise ExportError(f"Run {run.id} has no trained adapter yet: a stage must finish (or be stopped with Stop, "
                      f"which saves) before anything can be exported.")


def _zip_folder(folder: Path, target: Path, arc_root: str) -> Path:
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f"{arc_root}/{f.relative_to(folder)}")
    tmp.replace(target)
    return target


def export_adapter(run: RunFolder) -> Path:
    """A zip of the adapter folder (PEFT format: load it with PeftModel.from_pretrained)."""
    return _zip_folder(final_adapter(run), export_dir(run) / f"{run.id}-adapter.zip", f"{run.id}-adapter")


GB = 1 << 30
FP32_BELOW = 50_000_000  # parameters: toy models (`tiny`) merge in fp32, where it costs nothing and is exact
MERGE_MARGIN = GB  # Python, torch and the tokenizer, on top of the weights
SHARD = "1GB"  # max_shard_size: each shard is serialized alone, so saving adds at most about this much


def merge_dtype(params: int):
    """bf16 halves the RAM of an fp32 merge and is what checkpoints ship in; fp32 only for toy models."""
    import torch

    return torch.float32 if params < FP32_BELOW else torch.bfloat16


def parameter_count(name: str) -> int:
    """Parameters of the base model, exactly from its safetensors headers (8-byte length + JSON, read without
    loading any weight), for a local folder or a Hub id in the local cache; else estimated from other weight
    files' sizes as fp32 (an overestimate for 16-bit files, so the memory check errs on the safe side); 0 when
    no weights are on this machine yet."""
    import math

    from finetuner.modeling.load import resolve_model_path

    folder = Path(resolve_model_path(name, fetch=False)).expanduser()
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(name, local_files_only=True))
        except Exception:  # noqa: BLE001 - not cached: the size is unknown until it downloads
            return 0
    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with open(file, "rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        total += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    return total or sum(f.stat().st_size for f in folder.glob("*.bin")) // 4


def available_memory() -> int:
    """Bytes of RAM this process can still use: psutil's `available`, else /proc/meminfo's MemAvailable;
    0 when neither can tell (then nothing is refused)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def merge_memory(params: int) -> int:
    """RAM a CPU merge needs: the weights once in the merge dtype (LoRA factors are tiny), one shard being
    serialized, and a margin."""
    import torch

    return params * (4 if merge_dtype(params) == torch.float32 else 2) + GB + MERGE_MARGIN


def _load_base(cfg, dtype):
    """(model, tokenizer) on the CPU in `dtype`, whatever GPU the machine has: the training load (load_model)
    would put the unquantized base on the GPU, where a 7B base trained with QLoRA on 12 GB does not fit."""
    from transformers import AutoModelForCausalLM

    from finetuner.modeling.load import _not_found, _remote_code_refused, load_tokenizer, resolve_model_path

    name, trust = cfg.model.name, cfg.model.trust_remote_code
    try:
        model = AutoModelForCausalLM.from_pretrained(resolve_model_path(name), dtype=dtype, device_map={"": "cpu"},
                                                     low_cpu_mem_usage=True, trust_remote_code=trust)
    except OSError as err:
        raise ExportError(_not_found(name, err)) from None
    except ValueError as err:
        raise _remote_code_refused(name, err) from None
    return model, load_tokenizer(name, trust)


def export_merged(run: RunFolder, progress=None) -> Path:
    """The base model with the adapter merged into its weights, saved with the tokenizer: a plain
    transformers model folder. Merged on the CPU, unquantized (merging into 4-bit weights loses precision), in
    bf16 (fp32 for toy models), saved in shards; the memory it needs is said first, and refused when the
    machine's free RAM is below it."""
    from peft import PeftModel

    from finetuner.config import load_config

    say = progress or (lambda fraction, text: None)
    cfg = load_config(run.config_path)
    adapter = final_adapter(run)
    params = parameter_count(cfg.model.name)
    dtype = merge_dtype(params)
    kind = "fp32" if str(dtype).endswith("float32") else "bf16"
    need, free = merge_memory(params), available_memory()
    size = f"{params / 1e9:.2f}B" if params >= 1e8 else f"{params / 1e6:.1f}M"
    if not params:  # weights not on this machine yet: they download first, and the need is unknown
        say(0.05, f"Merging on the CPU in {kind}: the model's size is not known before it downloads; it needs "
                  f"about 2 GB of free memory (RAM) per billion parameters, plus 2 GB.")
    else:
        have = f"{free / GB:.1f} GB is free" if free else "how much is free could not be read"
        say(0.05, f"Merging on the CPU in {kind}: a {size}-parameter model needs about {need / GB:.1f} GB of free "
                  f"memory (RAM); {have}.")
    if params and free and free < need:
        raise ExportError(f"Merging needs about {need / GB:.1f} GB of free memory (RAM) for this {size}-parameter "
                          f"model in {kind}, and only {free / GB:.1f} GB is free. Close other programs (or stop a "
                          f"run that is training), use a machine with more RAM, or download the adapter zip "
                          f"instead: it loads on top of the base model without merging.")
    say(0.1, f"Loading the base model on the CPU in {kind}")
    model, tok = _load_base(cfg, dtype)
    say(0.5, "Merging the adapter into the weights")
    # torch_device: PEFT would otherwise load the adapter's tensors onto the GPU when one is present.
    merged = PeftModel.from_pretrained(model, str(adapter), torch_device="cpu").merge_and_unload()
    target = export_dir(run) / "merged"
    if target.exists():
        shutil.rmtree(target)
    say(0.8, "Saving")
    merged.save_pretrained(str(target), max_shard_size=SHARD)
    tok.save_pretrained(str(target))
    say(1.0, "Done")
    return target


def push_to_hub(run: RunFolder, repo_id: str, token: str, what: str = "adapter", private: bool = True) -> str:
    """Upload the adapter (or the merged model, after export_merged) to a Hub repository; returns its URL.

    `token` is passed to this one call and nowhere else: not saved, not logged, not put in an error message."""
    repo_id = (repo_id or "").strip()
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise ExportError("Give the Hub repository as owner/name, e.g. `my-user/arithmetic-lora`.")
    if not (token or "").strip():
        raise ExportError("Paste a Hugging Face access token with write permission (huggingface.co/settings/"
                          "tokens). It is used for this upload only and never saved.")
    if what == "merged":
        folder = export_dir(run) / "merged"
        if not (folder / "config.json").exists():
            raise ExportError("Make the merged model first (Export merged model), then push it.")
    else:
        folder = final_adapter(run)
    try:
        from huggingface_hub import HfApi

        api = HfApi(token=token.strip())
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id,
                                 commit_message=f"Finetuner run {run.id} ({what})")
    except Exception as err:  # noqa: BLE001 - every failure becomes one clear message
        raise ExportError(_hub_message(err, token)) from None
    return str(getattr(info, "repo_url", None) or f"https://huggingface.co/{repo_id}")


def _hub_message(err: Exception, token: str) -> str:
    text = f"{type(err).__name__}: {err}".replace(token.strip(), "***") if token.strip() else str(err)
    name = type(err).__name__
    if "Offline" in name or "offline" in text.lower():
        return ("Cannot reach the Hugging Face Hub: offline mode is on (HF_HUB_OFFLINE=1, the app's default). "
                "Restart the app with FINETUNER_ONLINE=1 on a machine with internet access, or download the "
                "adapter zip and upload it yourself.")
    if "401" in text or "403" in text or "Unauthorized" in text or "Forbidden" in text:
        return "The Hub refused the token: check that it is valid and has write permission for that repository."
    if "Connection" in name or "Connect" in text or "resolve" in text.lower() or "Timeout" in name:
        return ("Cannot reach the Hugging Face Hub (no network connection?). Check your internet access, or "
                "download the adapter zip and upload it yourself.")
    return f"The upload to the Hub failed: {text[:300]}"


# ------------------------------------------------------------------ reproducible bundle


def strip_secrets(value):
    """A copy without any field whose name looks like a credential (api_key_env, a variable's name, stays)."""
    if isinstance(value, dict):
        return {k: strip_secrets(v) for k, v in value.items()
                if k in KEEP_KEYS or not SECRET_KEY.search(str(k))}
    if isinstance(value, list):
        return [strip_secrets(v) for v in value]
    if isinstance(value, str):
        return SECRET_VALUE.sub("<removed secret>", value)
    return value


class _Files:
    """Files copied into the bundle, each under a unique name in its folder."""

    def __init__(self):
        self.files: dict[str, Path] = {}  # name in the bundle -> source

    def add(self, source: Path, folder: str) -> str:
        for name, known in self.files.items():
            if known == source:
                return name
        name, n = f"{folder}/{source.name}", 1
        while name in self.files:
            n += 1
            name = f"{folder}/{source.stem}-{n}{source.suffix}"
        self.files[name] = source
        return name


def _rewrite_grader_files(spec, files: _Files):
    if isinstance(spec, dict):
        out = {}
        for k, v in spec.items():
            if k in FILE_KEYS and isinstance(v, str) and Path(v).is_file():
                out[k] = files.add(Path(v).resolve(), "graders")
            else:
                out[k] = _rewrite_grader_files(v, files)
        return out
    if isinstance(spec, list):
        return [_rewrite_grader_files(v, files) for v in spec]
    return spec


def _rewrite_tool_files(spec, files: _Files, notes: list[str]):
    if not isinstance(spec, dict):
        return spec
    out = dict(spec)
    for key in ("file", "table"):
        value = out.get(key)
        if isinstance(value, str) and Path(value).is_file():
            out[key] = files.add(Path(value).resolve(), "tools")
        elif isinstance(value, str) and value:
            notes.append(f"Tool `{out.get('name') or out.get('example')}`: its `{key}` ({Path(value).name}) was not "
                         f"found when the bundle was made; put it back and fix the path in run.yaml.")
    return out


def bundle_config(run: RunFolder) -> tuple[dict, dict[str, Path], list[str]]:
    """(config as a dict with bundle-relative paths and no secrets, {bundle name: source file}, notes)."""
    spec = yaml.safe_load(run.config_path.read_text(encoding="utf-8")) or {}
    spec = strip_secrets(spec)
    files, notes = _Files(), []
    data = spec.get("data") or {}
    for key in ("train", "eval", "rft_train"):
        value = data.get(key)
        if value and Path(value).is_file():
            data[key] = files.add(Path(value).resolve(), "data")
        elif value and Path(value).is_absolute():
            notes.append(f"`data.{key}` ({Path(value).name}) was not found when the bundle was made; put it "
                         f"back and fix the path in run.yaml.")
    spec["graders"] = _rewrite_grader_files(spec.get("graders") or [], files)
    if spec.get("tools"):  # Agent RFT: a tool's code file and the table it reads travel with it
        spec["tools"] = [_rewrite_tool_files(t, files, notes) for t in spec["tools"]]
    model = (spec.get("model") or {}).get("name", "")
    if model and Path(model).is_absolute():
        notes.append(f"The base model is a local folder ({model}); it is not in the bundle. Copy it and set "
                     f"`model.name` in run.yaml to its path.")
    return spec, files.files, notes


def _readme(run: RunFolder, spec: dict, notes: list[str], has_results: bool) -> str:
    lines = [f"# Finetuner run `{run.id}`", "",
             f"Method `{spec.get('method')}` on model `{(spec.get('model') or {}).get('name')}`. This bundle holds "
             "what is needed to train it again: `run.yaml` (paths relative to this folder), the data under "
             "`data/`, grader files under `graders/` and tool files under `tools/` (a tool's code is in run.yaml "
             "unless it came from a file).", "", "## Train it again", "",
             # Finetuner is not on PyPI: a package there with the same name is an unrelated project, so the
             # commands install from the project's own folder and never name a package we do not own.
             "You need Finetuner itself: a copy or clone of the project this run was made with (the folder that "
             "holds `app.py` and `scripts/setup.sh`). It is not published on PyPI; a package there with the "
             "same name is a different project. In the project folder:", "", "```bash",
             "cd path/to/finetuner        # the Finetuner project folder",
             "bash scripts/setup.sh       # once: installs everything into .venv",
             f".venv/bin/python -m finetuner train {BUNDLE_PLACEHOLDER}/run.yaml", "```", "",
             f"`{BUNDLE_PLACEHOLDER}` is this folder. The run's folder appears under the project's `runs/` (and in "
             "the app's Runs tab).", "", "On several GPUs, from the same folder:", "", "```bash",
             f".venv/bin/accelerate launch -m finetuner train {BUNDLE_PLACEHOLDER}/run.yaml", "```", "",
             "LLM-judge graders read their API key from the environment variable named by `api_key_env`; keys are "
             "never stored in the bundle."]
    if has_results:
        lines += ["", "## Results", "", "`results/` holds the evaluation of the original run (`results.json`: mean "
                  "score per grader for the base model, after SFT and after RFT)."]
    if notes:
        lines += ["", "## Before you start", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def export_bundle(run: RunFolder) -> Path:
    """A zip to train this run again elsewhere: run.yaml, data/, graders/, README.md, results/."""
    spec, files, notes = bundle_config(run)
    results = [p for p in (run.eval_dir / "results.json", run.eval_dir / "demo.json") if p.exists()]
    target = export_dir(run) / f"{run.id}-bundle.zip"
    tmp = target.with_suffix(".zip.tmp")
    root = f"{run.id}-bundle"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{root}/run.yaml", yaml_text(spec))
        zf.writestr(f"{root}/README.md", _readme(run, spec, notes, bool(results)))
        for name, source in files.items():
            zf.write(source, f"{root}/{name}")
        for path in results:
            zf.writestr(f"{root}/results/{path.name}", json.dumps(strip_secrets(json.loads(path.read_text())),
                                                                  indent=1))
    tmp.replace(target)
    return target


# ------------------------------------------------------------------ deleting


def delete_run(run: RunFolder) -> None:
    """Remove a run folder for good; refused while the run is training."""
    from finetuner.runs.process import launch_lock

    with launch_lock(run.path.parent):  # the queue starts a waiting run under this lock: never delete one mid-start
        status = refresh_state(run)
        if status.get("state") in ACTIVE_STATES:
            raise RunError(f"Run {run.id} is {status['state']}. Stop it first (Monitor tab), then delete it.")
        shutil.rmtree(run.path)  # a waiting run's place in queue.json goes with its folder (queue._current_order)
