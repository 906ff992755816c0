"""Multi-turn generation with tools, outside TRL: held-out evaluation, chat and the agent demo's measurements.

The loop mirrors what TRL's GRPOTrainer does with `tools=[...]` so that numbers measured here mean the same
as rewards seen in training: the conversation is rendered with the tokenizer's chat template (tools listed),
the model writes one assistant turn, `trl.chat_template_utils.parse_response` reads it back into
{"content", "tool_calls"}, each call runs, and its result goes back as a {"role": "tool"} message; a tool that
raises, or a name that is not a tool, answers `str({"error": ...})` as TRL does. Then the next turn.

A model's bad output never raises here: malformed calls come back as plain text (parse_response's fallback),
and a turn that runs out of tokens or of context ends the conversation with `truncated` set.
"""

from __future__ import annotations

from typing import Callable


def _ids(rendered) -> list[int]:
    # apply_chat_template returns a list of ids, or a BatchEncoding/dict depending on the transformers version.
    if isinstance(rendered, dict) or hasattr(rendered, "keys"):
        rendered = rendered["input_ids"]
    return list(rendered)


def _run_call(call: dict, by_name: dict[str, Callable]) -> tuple[str, str, bool]:
    """Run one parsed tool call: (tool name, result text, failed)."""
    function = call.get("function") or {}
    name = str(function.get("name", "unknown"))
    try:
        if call.get("type", "function") != "function":
            raise ValueError(f"Unsupported tool call type: {call.get('type')}")
        if name not in by_name:
            raise ValueError(f"Tool {name} not found.")
        args = function.get("arguments") or {}
        if not isinstance(args, dict):
            raise ValueError(f"Arguments of {name} must be an object, got {type(args).__name__}.")
        return name, str(by_name[name](**args)), False
    except Exception as err:  # noqa: BLE001 -- any tool failure is the model's feedback, as in TRL
        return name, str({"error": str(err)}), True


def _context_limit(model, tok) -> int:
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(limit or tok.model_max_length)


def run_with_tools(model, tok, conversations: list[list[dict]], tools: list[Callable], max_calls: int = 3,
                   max_new_tokens: int = 96, do_sample: bool = False, temperature: float = 1.0) -> list[dict]:
    """Let the model answer each conversation, calling `tools` over up to `max_calls` calling turns.

    `max_new_tokens` bounds each assistant turn. Returns, per conversation, {"messages": the new assistant and
    tool messages (TRL's shape), "calls": tool calls run, "errors": calls that failed, "hit_limit": the model
    still called tools after `max_calls` calling turns (that last call is kept but not run), "truncated": a turn
    ran out of `max_new_tokens` or of the model's context}.
    """
    import torch
    from trl.chat_template_utils import parse_response

    by_name = {tool.__name__: tool for tool in tools}
    limit = _context_limit(model, tok)
    results = [{"messages": [], "calls": 0, "errors": 0, "hit_limit": False, "truncated": False} for _ in conversations]
    turns = [0] * len(conversations)  # calling turns so far
    active = list(range(len(conversations)))
    was_training, side = model.training, tok.padding_side
    model.eval()
    tok.padding_side = "left"  # decoder-only batch generation needs left padding
    try:
        while active:
            prompts: dict[int, list[int]] = {}
            for i in active:
                ids = _ids(tok.apply_chat_template(conversations[i] + results[i]["messages"], tools=tools,
                                                   add_generation_prompt=True))
                if len(ids) >= limit:  # no room left for even one token
                    results[i]["truncated"] = True
                else:
                    prompts[i] = ids
            active = list(prompts)
            if not active:
                break
            outputs = _generate(model, tok, [prompts[i] for i in active], max_new_tokens, limit, do_sample,
                                temperature, torch)
            still = []
            for i, (ids, finished) in zip(active, outputs):
                res = results[i]
                if not finished:
                    # Cut off mid-turn: keep what it wrote as text, run nothing.
                    res["messages"].append({"role": "assistant", "content": tok.decode(ids, skip_special_tokens=True)})
                    res["truncated"] = True
                    continue
                parsed = parse_response(tok, ids, prefix=prompts[i], tools=tools)
                message = {"role": "assistant", "content": parsed.get("content") or ""}
                calls = parsed.get("tool_calls") or []
                if calls:
                    message["tool_calls"] = calls
                res["messages"].append(message)
                if not calls:
                    continue
                if turns[i] >= max_calls:
                    res["hit_limit"] = True
                    continue
                turns[i] += 1
                for call in calls:
                    name, content, failed = _run_call(call, by_name)
                    res["calls"] += 1
                    res["errors"] += failed
                    res["messages"].append({"role": "tool", "name": name, "content": content})
                still.append(i)
            active = still
    finally:
        tok.padding_side = side
        model.train(was_training)
    return results


def _generate(model, tok, prompts: list[list[int]], max_new_tokens: int, limit: int, do_sample: bool,
              temperature: float, torch) -> list[tuple[list[int], bool]]:
    """One assistant turn per prompt: (new ids up to and including eos, whether eos came in time)."""
    caps = [min(max_new_tokens, limit - len(p)) for p in prompts]
    width = max(len(p) for p in prompts)
    pad = tok.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=model.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=model.device)
    kwargs = {"do_sample": do_sample}
    if do_sample:
        kwargs["temperature"] = temperature
    with torch.no_grad():
        gen = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max(caps),
                             pad_token_id=pad, eos_token_id=tok.eos_token_id, **kwargs)
    out = []
    for row, cap in zip(gen[:, width:].tolist(), caps):
        # Tokens past a row's own cap would sit beyond its context; a causal model's earlier tokens do not
        # depend on them, so cutting there gives exactly what a lone generation with that cap would.
        row = row[:cap]
        if tok.eos_token_id in row:
            out.append((row[: row.index(tok.eos_token_id) + 1], True))
        else:
            out.append((row, False))
    return out
