"""`rft.algorithm` presets -> TRL GRPOConfig fields.

Each preset is what its paper recommends, expressed in TRL 1.16's public GRPOConfig fields. The RFTConfig
fields a preset governs default to `auto` (0 for the clipping ranges); a value a person sets wins over the
preset, so "DAPO but with sequence-level ratios" is `algorithm: dapo` + `importance_sampling_level: sequence`.
`custom` sets nothing: every `auto` is TRL's own default.

Why clipping barely matters here: the engine generates one batch per optimizer step (on-policy), so the policy
ratio is 1 when the loss is taken and clipping (epsilon, epsilon_high) never binds. What differs between the
presets on-policy is how the loss is normalised (per sequence, per token, by a constant) and how rewards are
scaled; the benchmark (`bench --only rl`) measures those differences on the demo.
"""

from __future__ import annotations

# preset -> the TRL fields it sets; fields not named keep TRL's default
PRESETS: dict[str, dict] = {
    # DeepSeekMath (Shao et al. 2024, arXiv 2402.03300): mean over each sequence's tokens, group std scaling.
    "grpo": {"loss_type": "grpo", "scale_rewards": "group", "importance_sampling_level": "token",
             "epsilon": 0.2, "epsilon_high": 0.2, "mask_truncated_completions": False},
    # Dr. GRPO (Liu et al. 2025, arXiv 2503.20783): a constant normaliser (no length bias), no std scaling
    # (no question-difficulty bias).
    "dr_grpo": {"loss_type": "dr_grpo", "scale_rewards": "none", "importance_sampling_level": "token",
                "epsilon": 0.2, "epsilon_high": 0.2, "mask_truncated_completions": False},
    # DAPO (Yu et al. 2025, arXiv 2503.14476): token-level loss over the whole batch, clip-higher 0.28,
    # truncated completions out of the loss. Its dynamic sampling is not in TRL; the curriculum is our remedy.
    "dapo": {"loss_type": "dapo", "scale_rewards": "group", "importance_sampling_level": "token",
             "epsilon": 0.2, "epsilon_high": 0.28, "mask_truncated_completions": True},
    # GSPO (Zheng et al. 2025, arXiv 2507.18071): one importance ratio per sequence, its tight clip range;
    # TRL's docs pair it with loss_type "grpo".
    "gspo": {"loss_type": "grpo", "scale_rewards": "group", "importance_sampling_level": "sequence",
             "epsilon": 3e-4, "epsilon_high": 4e-4, "mask_truncated_completions": False},
    "custom": {},
}

WHY = {
    "grpo": "GRPO (DeepSeekMath, arXiv 2402.03300): the original; per-sequence loss favours short right and long "
            "wrong answers.",
    "dr_grpo": "Dr. GRPO (arXiv 2503.20783): no length bias, no std scaling; steady completion lengths.",
    "dapo": "DAPO (arXiv 2503.14476): token-level loss, clip-higher, truncated completions masked.",
    "gspo": "GSPO (arXiv 2507.18071): sequence-level importance ratios; steadier on long completions.",
    "custom": "Custom: only the fields you set; the rest are TRL's defaults.",
}


def _explicit(r) -> dict:
    """The governed fields a person set (not `auto` / 0), as TRL values."""
    out = {}
    for name in ("loss_type", "scale_rewards", "importance_sampling_level"):
        value = getattr(r, name)
        if value != "auto":
            out[name] = value
    for name in ("epsilon", "epsilon_high"):
        value = getattr(r, name)
        if value > 0:
            out[name] = value
    if r.mask_truncated_completions != "auto":
        out["mask_truncated_completions"] = r.mask_truncated_completions == "on"
    return out


def trl_fields(r) -> dict:
    """GRPOConfig keyword arguments for an RFTConfig: the preset, then the fields set by hand, then the fields
    every preset leaves to the person (entropy quantile, multi-grader aggregation)."""
    fields = dict(PRESETS[r.algorithm])
    fields.update(_explicit(r))
    if "epsilon" in fields and "epsilon_high" not in fields:
        fields["epsilon_high"] = fields["epsilon"]
    fields["top_entropy_quantile"] = r.top_entropy_quantile
    fields["multi_objective_aggregation"] = ("normalize_then_sum" if r.reward_aggregation == "normalize_then_sum"
                                             else "sum_then_normalize")
    return fields


def describe(r) -> str:
    """One line for the run log: the preset, what it set, and what was changed by hand."""
    changed = _explicit(r)
    preset = PRESETS[r.algorithm]
    own = {k: v for k, v in changed.items() if preset.get(k) != v}
    text = f"RFT algorithm `{r.algorithm}`: " + ", ".join(f"{k}={v}" for k, v in trl_fields(r).items())
    if own and r.algorithm != "custom":
        text += " (set by hand: " + ", ".join(f"{k}={v}" for k, v in own.items()) + ")"
    return text
