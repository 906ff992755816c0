"""Greedy answers to held-out prompts, with the run's tools when it has any (Agent RFT).

    completions = answers(model, tok, prompts, max_new_tokens=32, tools=build_tools(cfg.tools, cfg.base_dir))

Without tools each completion is the answer's text (modeling/generate.py). With tools the model may call them
over several turns (modeling/tool_chat.py, the same loop as TRL's rollouts) and each completion is the list
of messages after the prompt, which graders read as a trajectory (graders/trajectory.py): the final answer in
`sample.output_text`, the calls in `sample.tool_calls`. Used by the Evaluate tab, `eval.every_steps` and chat.
"""

from __future__ import annotations


def answers(model, tok, prompts: list, max_new_tokens: int, template_kwargs: dict | None = None, tools=None,
            max_calls: int = 3) -> list:
    if not tools:
        from finetuner.modeling.generate import generate

        return [o[0] for o in generate(model, tok, list(prompts), n=1, max_new_tokens=max_new_tokens,
                                       temperature=0.0, template_kwargs=template_kwargs)]
    from finetuner.modeling.tool_chat import run_with_tools

    conversations = [[{"role": "user", "content": p}] if isinstance(p, str) else list(p) for p in prompts]
    results = run_with_tools(model, tok, conversations, [t.function for t in tools], max_calls=max_calls,
                             max_new_tokens=max_new_tokens)
    return [r["messages"] for r in results]


def shown_reply(messages: list[dict]) -> str:
    """A chat reply that used tools, as text: each call with what its tool answered, then the final answer."""
    from graders.trajectory import trajectory_fields

    fields = trajectory_fields(messages)
    lines = []
    for call in fields["tool_calls"]:
        args = ", ".join(f"{k}={v!r}" for k, v in call["arguments"].items())
        mark = "failed" if call["error"] else "gave"
        lines.append(f"[tool] {call['name']}({args}) {mark}: {call['result'] if call['result'] is not None else '-'}")
    if fields["unfinished"]:
        lines.append("[the model was still calling tools when the call limit was reached]")
    return "\n".join(lines + ([fields["output_text"]] if fields["output_text"] else []))
