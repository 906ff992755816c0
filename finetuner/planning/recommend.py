"""Which method to train with, and why: SFT, RFT or SFT then RFT, from what the data and graders say.

    rec = recommend(has_labels=True, rows=200, n_graders=2, base_pass_rate=0.0, verifiable=True)
    rec.method   # "sft+rft"
    rec.reason   # one sentence a person can act on
    rec.caveats  # what to keep in mind (cost, overfitting, graders to add)

The rules follow the "Best For" section of the seed article (Reinforcement Fine-Tuning vs Standard
Fine-Tuning): labelled answers and style/format/knowledge -> SFT; verifiable answers with few labels -> RFT;
both -> SFT then RFT. Two checks come from the grader dry run on base-model samples: a pass rate near 0
means RFT has no successes to learn from (SFT first), near 1 means RFT has nothing left to teach.
`verifiable_graders` and `base_pass_rate` derive the inputs from a project's graders and dry-run summary;
`model_caveat` says when the chosen model cannot do the task at all (the built-in `tiny` on a user's data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Below this many labelled rows SFT tends to memorise (the article's "fewer than 100 labeled examples").
FEW_ROWS = 100
NO_SIGNAL, SATURATED = 0.05, 0.95
COST_CAVEAT = ("RFT costs many times more compute per example than SFT: it samples several answers per prompt and "
               "grades each. The article quotes 100-700x (a claim from TensorZero's benchmark, not measured here).")
# Grader types that check an answer against a rule (verifiable); judges and length limits judge style.
VERIFIABLE_TYPES = {"string_check", "regex", "json_schema", "math", "python", "text_similarity"}


# A real small chat model to point to when the built-in one cannot do a user's task.
REAL_MODELS = "`smollm2-135m` (the real small model, built in) or a bigger chat model such as Qwen2.5-0.5B-Instruct"


@dataclass
class Recommendation:
    method: str  # sft | rft | sft+rft
    reason: str
    caveats: list[str] = field(default_factory=list)
    warning: str = ""  # shown first, in bold: the method given cannot learn as things stand

    def markdown(self) -> str:
        label = {"sft": "SFT", "rft": "RFT", "sft+rft": "SFT then RFT"}[self.method]
        lines = [f"⚠️ **{self.warning}**", ""] if self.warning else []
        lines += [f"**Recommended: {label}.** {self.reason}"]
        lines += [f"- {c}" for c in self.caveats]
        return "\n".join(lines)


def verifiable_graders(specs: list[dict]) -> bool | None:
    """True when some grader checks answers by rule, False when all judge style (LLM judges, length),
    None without graders. A multi counts by its parts."""
    if not specs:
        return None
    types = set()
    for spec in specs:
        if spec.get("type") == "multi" and isinstance(spec.get("graders"), dict):
            types |= {s.get("type") for s in spec["graders"].values() if isinstance(s, dict)}
        else:
            types.add(spec.get("type"))
    return bool(types & VERIFIABLE_TYPES)


def base_pass_rate(dry_run: dict | None) -> float | None:
    """The base model's pass rate (the dry run's share of passing samples; from an older summary, its mean reward
    as a share of the reward range), from a dry run on base-model samples
    (a run on a data column measures the graders, not the model, so it says nothing here)."""
    if not dry_run or dry_run.get("source") != "base" or dry_run.get("mean") is None:
        return None
    if dry_run.get("pass_rate") is not None:  # the share of samples that pass (rft.pass_threshold), when known
        return float(dry_run["pass_rate"])
    # A Python grader declares no range; then each grader is taken as scoring 0..1 (what its editor asks for),
    # so the weighted sum's maximum is the sum of the weights, not 1 (which read any mean over 1 as 100 %).
    weights = [abs(g.get("weight") or 0.0) for g in (dry_run.get("graders") or {}).values()]
    lo, hi = dry_run.get("range") or (0.0, sum(weights) or 1.0)
    if hi <= lo:
        return None
    return min(1.0, max(0.0, (dry_run["mean"] - lo) / (hi - lo)))


def recommend(has_labels: bool, rows: int, n_graders: int, base_pass_rate: float | None = None,
              verifiable: bool | None = None) -> Recommendation:
    caveats: list[str] = []
    rate = "" if base_pass_rate is None else f" (the base model scores {base_pass_rate:.0%} of the maximum)"
    if not has_labels and not n_graders:
        return Recommendation("rft", "Your data has prompts but no answers, so only RFT can learn from it, and RFT "
                              "learns from graders' scores.", ["Add at least one grader on the Graders tab, or "
                                                               "add answers to the data to use SFT.", COST_CAVEAT])
    if not n_graders:
        caveats.append("To use RFT, add graders that score answers (correctness, format) on the Graders tab.")
        if rows < FEW_ROWS:
            caveats.append(f"With {rows} rows SFT may memorise them: train few epochs and watch the eval loss.")
        return Recommendation("sft", "Your data has labelled answers and there are no graders yet: SFT learns to "
                              "reproduce the answers, their format and style, cheaply.", caveats)
    if not has_labels:
        if base_pass_rate is not None and base_pass_rate <= NO_SIGNAL:
            # RFT is the only method this data allows, and it would learn nothing: say that first.
            return Recommendation(
                "rft", "It is the only method for prompts without answers, but as things stand it would learn "
                "nothing.",
                [f"The base model almost never succeeds{rate}: every attempt gets the same zero reward. Add "
                 "labelled examples (an answer column, mapped on the Data tab) and train SFT then RFT, so SFT "
                 "teaches the task before RFT refines it.", "Or make the graders give partial credit (format, "
                 "closeness), so some attempts score above others.", COST_CAVEAT],
                warning="RFT cannot learn from all-zero rewards: every attempt scores the same, so there is "
                        "nothing to reinforce. Labelled examples are needed.")
        if base_pass_rate is not None and base_pass_rate >= SATURATED:
            caveats.append(f"The base model already succeeds{rate}: RFT will not help much; use harder prompts "
                           "or stricter graders.")
        caveats.append(COST_CAVEAT)
        return Recommendation("rft", "Your data has prompts without answers and you have graders: RFT learns from "
                              "the graders' scores of the model's own attempts.", caveats)
    # Labels and graders from here on.
    if base_pass_rate is not None and base_pass_rate <= NO_SIGNAL:
        # Before the style and few-rows rules: whatever the graders judge, all-zero rewards teach RFT nothing.
        return Recommendation(
            "sft+rft" if verifiable is not False else "sft",
            f"The base model almost never passes your graders{rate}, so RFT alone would score every attempt "
            "the same and have nothing to learn from: SFT first teaches the answers and their format"
            + (", then RFT sharpens correctness." if verifiable is not False else "."),
            ["After SFT, check the SFT model's scores on the Evaluate tab before a long RFT stage: RFT needs "
             "some attempts to pass.", COST_CAVEAT])
    if base_pass_rate is not None and base_pass_rate >= SATURATED:
        return Recommendation("sft", f"The base model already passes your graders{rate}, so RFT has little to "
                              "teach; SFT can still teach the answers' style and format.",
                              ["For RFT to help, use harder prompts or stricter graders."])
    if verifiable is False:
        return Recommendation("sft", "Your graders judge style or tone rather than checkable correctness, and you "
                              "have labelled answers: style and format are what SFT learns best, at a fraction "
                              "of RFT's cost.", ["RFT with an LLM judge is possible, but slow and costly; try SFT "
                                                 "first and add RFT if the judge's scores still lag.", COST_CAVEAT])
    if rows < FEW_ROWS and verifiable:
        return Recommendation("rft", f"You have few labelled rows ({rows}) but answers your graders can verify: "
                              "RFT learns from scored attempts and avoids the overfitting that SFT risks on small "
                              "data.", ["If the base model rarely passes (test the graders on base-model samples),"
                                        " do SFT then RFT instead.", COST_CAVEAT])
    caveats = [COST_CAVEAT]
    if base_pass_rate is None:
        caveats.insert(0, "Test the graders on base-model samples (Graders tab) to check that RFT gets a learning "
                          "signal.")
    return Recommendation("sft+rft", "You have labelled answers and graders that verify them: SFT first grounds the "
                          "model in your answers and format, then RFT improves what the graders reward.", caveats)


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def own_data(path: str | None) -> bool:
    """Whether `path` (the training data) is a person's own rather than a shipped example's, like the demo's."""
    if not path:
        return False
    try:
        return not Path(path).expanduser().resolve().is_relative_to(EXAMPLES)
    except (OSError, ValueError):
        return True


# The model a person's own data gets by default: the real small model, which works offline on any CPU (the
# built-in `tiny` only knows the demo's sums and writes noise on anything else).
OWN_DATA_MODEL = "smollm2-135m"


def default_model(current: str | None, data_path: str | None) -> str | None:
    """The model to switch to when `data_path` is loaded: `smollm2-135m` for a person's own data while the model
    is still the built-in `tiny` (or unset), else None (keep what was chosen)."""
    if (current or "tiny").strip().lower() == "tiny" and own_data(data_path):
        return OWN_DATA_MODEL
    return None


def model_caveat(model: str, own: bool, base_pass_rate: float | None = None) -> str:
    """What to say when `model` cannot do the task: the built-in `tiny` only learned the arithmetic demo, so on
    a person's own data it writes noise and every RFT rollout scores 0. Empty when there is nothing to say."""
    if model != "tiny" or not own or (base_pass_rate is not None and base_pass_rate >= NO_SIGNAL):
        return ""  # not tiny, the demo's own data, or tiny already scores on this data (sums, say)
    if base_pass_rate is None:
        return (f"The built-in `tiny` model knows only sums (the demo): on other data it writes noise. Test your "
                f"graders on base-model samples to see, or pick {REAL_MODELS} in Model, as a local folder path or "
                "a Hugging Face id.")
    return (f"The built-in `tiny` model knows only sums (the demo): on your data it writes noise (its samples "
            f"scored {base_pass_rate:.0%} of the maximum in the grader test), and RFT cannot learn from scores "
            f"that are all 0. Pick {REAL_MODELS} in Model, as a local folder path or a Hugging Face id.")


# ---------------------------------------------------------------- models and settings per GPU size

# Instruct models worth starting from, small to large. They need the Hub (FINETUNER_ONLINE=1) or a local copy;
# Llama models are gated (accept Meta's licence on the Hub first).
MODELS = ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen3-0.6B", "meta-llama/Llama-3.2-1B-Instruct",
          "Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen3-1.7B", "Qwen/Qwen2.5-3B-Instruct",
          "meta-llama/Llama-3.2-3B-Instruct", "Qwen/Qwen3-4B", "Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen3-8B",
          "meta-llama/Llama-3.1-8B-Instruct")

# Settings that fit a ~3B model (8 GB) up to a ~8B model (24 GB) with QLoRA; RFT's batch_size x grad_accum
# stays a multiple of num_generations, as GRPO needs whole groups.
GPU_PRESETS: dict[int, dict] = {
    8: {"model.quantization": "auto", "model.max_length": 1024, "adapter.r": 16, "adapter.alpha": 32,
        "sft.batch_size": 2, "sft.grad_accum": 8, "rft.batch_size": 4, "rft.grad_accum": 2,
        "rft.num_generations": 4, "rft.max_completion_length": 256},
    12: {"model.quantization": "auto", "model.max_length": 1024, "adapter.r": 16, "adapter.alpha": 32,
         "sft.batch_size": 4, "sft.grad_accum": 4, "rft.batch_size": 8, "rft.grad_accum": 1,
         "rft.num_generations": 4, "rft.max_completion_length": 384},
    16: {"model.quantization": "auto", "model.max_length": 2048, "adapter.r": 16, "adapter.alpha": 32,
         "sft.batch_size": 4, "sft.grad_accum": 4, "rft.batch_size": 8, "rft.grad_accum": 2,
         "rft.num_generations": 8, "rft.max_completion_length": 512},
    24: {"model.quantization": "auto", "model.max_length": 2048, "adapter.r": 32, "adapter.alpha": 64,
         "sft.batch_size": 4, "sft.grad_accum": 4, "rft.batch_size": 8, "rft.grad_accum": 2,
         "rft.num_generations": 8, "rft.max_completion_length": 768},
}


def preset_for(gb: float) -> int | None:
    """The largest preset that a GPU of `gb` GB can hold, or None below 8 GB."""
    fitting = [size for size in GPU_PRESETS if size <= gb + 0.5]
    return max(fitting) if fitting else None


def nested(flat: dict) -> dict:
    """{"sft.batch_size": 2} -> {"sft": {"batch_size": 2}}."""
    out: dict = {}
    for dotted, value in flat.items():
        *parents, leaf = dotted.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def smallest_gpu(model: str, method: str = "sft") -> int | None:
    """The smallest preset GPU (GB) on which `model` with that preset's settings fits for `method`."""
    from finetuner.config import from_dict
    from finetuner.planning.memory import estimate

    for size, preset in sorted(GPU_PRESETS.items()):
        spec = nested(preset)
        spec.update(name="x", method=method, data={"train": "x"},
                    graders=[{"name": "g", "type": "length", "max": 1}] if method != "sft" else [])
        spec["model"]["name"] = model
        est = estimate(None, from_dict(spec), capacity_gb=size, device="cuda")
        if est.verdict != "will-not-fit":
            return size
    return None


def model_choices() -> list[tuple[str, str]]:
    """(label, id) for the model picker: the built-in model, then the recommended ids with size and GPU."""
    from finetuner.planning.memory import KNOWN

    from finetuner.modeling.builtin_real import LABEL

    out = [("tiny: the built-in offline demo model (0.45M parameters, knows only sums; any CPU)", "tiny"),
           (LABEL + " (0.13B, offline)", "smollm2-135m"),
           ("tiny-agent: the built-in model that can call a calculator tool (Agent RFT demo; any CPU)", "tiny-agent")]
    for model in MODELS:
        gb = smallest_gpu(model)
        where = f"SFT fits {gb} GB" if gb else "needs more than 24 GB"
        out.append((f"{model} ({KNOWN[model].params / 1e9:.1f}B, {where})", model))
    return out
