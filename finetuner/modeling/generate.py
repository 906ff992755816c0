"""Batch generation with a base model or a trained adapter, outside training.

Used by grader dry runs (`--samples base`), evaluation, the demo and the playground. Prompts are strings or
chat message lists; chat prompts go through the tokenizer's chat template with the generation prompt.
"""

from __future__ import annotations


def load_for_inference(model_name: str, adapter: str | None = None, quantization: str = "auto",
                       trust_remote_code: bool = False):
    """(model, tokenizer) in eval mode; with `adapter`, the PEFT adapter is loaded on top."""
    from finetuner.modeling.load import load_model

    model, tok, _plan = load_model(model_name, quantization, trust_remote_code)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    return model, tok


def render_prompt(tok, prompt, template_kwargs: dict | None = None) -> str:
    """The text the model sees for `prompt`: chat template with generation prompt (and `model.chat_template_kwargs`,
    e.g. enable_thinking), or the plain string when the tokenizer has no template."""
    if isinstance(prompt, str):
        if getattr(tok, "chat_template", None):
            prompt = [{"role": "user", "content": prompt}]
        else:
            return prompt
    return tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True, **(template_kwargs or {}))


def prompt_ids(tok, prompt, template_kwargs: dict | None = None) -> list[int]:
    """The token ids the model continues for `prompt`. A chat-rendered prompt is tokenized exactly as the template
    wrote it (a template that wants BOS writes it, as in training); a plain-text prompt gets the BOS the tokenizer
    adds to plain text, once (a text that already starts with it is left alone)."""
    text = render_prompt(tok, prompt, template_kwargs)
    ids = list(tok(text, add_special_tokens=False)["input_ids"])
    chat = not isinstance(prompt, str) or bool(getattr(tok, "chat_template", None))
    bos = tok.bos_token_id
    if chat or bos is None or ids[:1] == [bos]:
        return ids
    # Only the BOS: other special tokens the tokenizer appends (an EOS) would end the prompt.
    adds_bos = list(tok(text, add_special_tokens=True)["input_ids"])[:1] == [bos]
    return [bos] + ids if adds_bos else ids


def generate(model, tok, prompts: list, n: int = 1, max_new_tokens: int = 64, temperature: float = 0.0,
             batch_size: int = 32, seed: int | None = None, template_kwargs: dict | None = None) -> list[list[str]]:
    """`n` completions per prompt (greedy when temperature is 0). Returns one list of strings per prompt."""
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    texts = [prompt_ids(tok, p, template_kwargs) for p in prompts]
    device = next(model.parameters()).device
    side = tok.padding_side
    tok.padding_side = "left"  # decoder-only models continue from the right edge
    out: list[list[str]] = [[] for _ in texts]
    sample = temperature > 0
    try:
        flat = [(i, t) for i, t in enumerate(texts) for _ in range(n)]
        for start in range(0, len(flat), batch_size):
            chunk = flat[start:start + batch_size]
            enc = tok.pad({"input_ids": [t for _, t in chunk]}, padding=True, return_tensors="pt")
            enc = {k: v.to(device) for k, v in enc.items()}
            with torch.inference_mode():
                ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=sample,
                                     temperature=temperature if sample else None, top_p=None, top_k=None,
                                     pad_token_id=tok.pad_token_id)
            new = ids[:, enc["input_ids"].shape[1]:]
            for (i, _), row in zip(chunk, new):
                out[i].append(tok.decode(row, skip_special_tokens=True))
    finally:
        tok.padding_side = side
    return out
