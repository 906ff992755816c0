"""Agent RFT around TRL's tool loop: the tokenizer check, the SFT tools column, and the tool metrics.

TRL's GRPOTrainer runs multi-turn tool rollouts itself (`tools=[...]`, `max_tool_calling_iterations`): it
renders the tools into the prompt, parses each call with the tokenizer's response template, calls the
function, appends its answer and generates again. What it leaves to us:

- refusing early, in words, a model whose chat template cannot show tool calls, or whose calls no parser can
  read (TRL raises a ValueError deep in the trainer's constructor, after the weights loaded);
- the Monitor's numbers: calls per rollout, the share calling each tool, tool errors, turns, unfinished
  rollouts and the reward of rollouts with and without a call, per step (`ToolMetrics`, fed by the reward
  bridge's rows), plus the tools' own seconds and timeouts.
"""

from __future__ import annotations

from graders.errors import ConfigError


def check_tokenizer(tok, tools, model_name: str) -> None:
    """Make sure TRL can render and parse tool calls with this tokenizer; a ConfigError says why not."""
    from trl.chat_template_utils import (add_response_schema, get_training_chat_template,
                                         is_chat_template_prefix_preserving, supports_tool_calling)

    if not tools:
        return
    names = ", ".join(t.name for t in tools)
    if not supports_tool_calling(tok):
        raise ConfigError(
            f"The model {model_name!r} has a chat template that cannot show tool calls and their answers, so it "
            f"cannot use the tools ({names}). Choose a model whose template supports tools (the Qwen2.5 and Qwen3 "
            f"families, Llama 3.1+, or the built-in `tiny-agent`), or remove the tools.")
    if getattr(tok, "response_template", None) is None and getattr(tok, "response_schema", None) is None:
        try:
            add_response_schema(tok)
        except ValueError:
            raise ConfigError(
                f"The model {model_name!r} renders tool calls, but TRL has no parser for its chat template, so "
                f"the tool calls it writes could not be read back. Use a model TRL knows (Qwen2.5 / Qwen3, Llama "
                f"3.1 / 3.2, GLM-4, GPT-OSS) or the built-in `tiny-agent`, or remove the tools.") from None
    if not is_chat_template_prefix_preserving(tok):
        # TRL swaps in a training template that renders earlier turns the same whatever follows; it has them
        # for the families it knows only, and would raise after the weights loaded.
        try:
            get_training_chat_template(tok)
        except ValueError:
            raise ConfigError(
                f"The model {model_name!r} can call tools, but its chat template renders earlier turns differently "
                f"once a tool answers, and TRL has no training template for it, so multi-turn rollouts cannot be "
                f"built. Use a model TRL knows (Qwen2.5 / Qwen3, Llama 3.1 / 3.2) or the built-in `tiny-agent`, "
                f"or remove the tools.") from None


def check_run(cfg, tok) -> None:
    """Before any weights load: the run's tools build, and its model can use them."""
    from graders.tools import build_tools

    check_tokenizer(tok, build_tools(cfg.tools, cfg.base_dir), cfg.model.name)


def attach_tools(cfg, bridge) -> list:
    """The RFT stage's tools, with their metrics fed by the reward bridge's rows."""
    from graders.tools import build_tools

    tools = build_tools(cfg.tools, cfg.base_dir)
    bridge.listeners.append(ToolMetrics(tools))
    return tools


class ToolMetrics:
    """A reward-bridge listener: per graded batch, the tool numbers of its rollouts, logged through TRL's
    `log_metric` (so they land in the step's metrics.jsonl row)."""

    def __init__(self, tools):
        self.tools = list(tools)

    def __call__(self, rows, items, tag, log_metric) -> None:
        if log_metric is None or not rows:
            return
        values = rollout_stats(rows, [t.name for t in self.tools])
        for tool in self.tools:
            stats = tool.drain_stats()
            if stats["calls"]:
                values[f"tools/{tool.name}/seconds"] = stats["seconds"] / stats["calls"]
                # counted by the tool itself, so a failed call whose answer TRL dropped (no room) counts too
                values[f"tools/{tool.name}/errors"] = stats["errors"]
                values[f"tools/{tool.name}/timeouts"] = stats["timeouts"]
        for name, value in values.items():
            try:
                log_metric(name, float(value))
            except Exception:  # noqa: BLE001 - metrics must never stop training
                pass


def rollout_stats(rows: list[dict], tool_names: list[str]) -> dict:
    """Tool numbers of graded rollouts (rows as samples.jsonl holds them). Pure, for the Monitor too."""
    n = len(rows)
    if not n:
        return {}
    info = [r.get("tools") or {} for r in rows]
    calls = [i.get("calls", 0) for i in info]
    errors = sum(i.get("errors", 0) for i in info)
    out = {"tools/calls_per_rollout": sum(calls) / n,
           "tools/call_rate": sum(c > 0 for c in calls) / n,
           "tools/error_rate": errors / sum(calls) if sum(calls) else 0.0,
           "tools/turns": sum(i.get("turns", 1) for i in info) / n,
           "tools/unfinished_rate": sum(bool(i.get("unfinished")) for i in info) / n,
           "tools/truncated_rate": sum(bool(r.get("truncated")) for r in rows) / n}
    for name in tool_names:
        out[f"tools/{name}/call_rate"] = sum(name in (i.get("names") or []) for i in info) / n
    with_call = [r.get("total", 0.0) for r, c in zip(rows, calls) if c]
    without = [r.get("total", 0.0) for r, c in zip(rows, calls) if not c]
    if with_call:
        out["tools/reward_with_call"] = sum(with_call) / len(with_call)
    if without:
        out["tools/reward_without_call"] = sum(without) / len(without)
    return out
