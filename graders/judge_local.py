"""A judge that runs a local Hugging Face model (`provider: local` or `base_url: local`).

Same prompts and parsing as the HTTP judge, but `transformers` `generate` in this process: the model loads
on first use (never at build time), prompts go through the tokenizer's chat template, and a batch of
prompts is generated together with left padding. Generation runs in a worker thread so the judges' event
loop stays free; a lock keeps one generate at a time on the model.
"""

from __future__ import annotations

import asyncio
import threading
import time


class LocalBackend:
    def __init__(self, model: str, batch_size: int = 8):
        self.model_name, self.batch_size = model, batch_size
        self._model = self._tok = None
        self._lock = threading.Lock()

    def identity(self):
        return ["local", self.model_name]

    def _load(self):
        if self._model is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tok = AutoTokenizer.from_pretrained(self.model_name)
            model = AutoModelForCausalLM.from_pretrained(self.model_name)
            model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
            tok.padding_side = "left"  # generation continues from the right end of every prompt
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            self._model, self._tok = model, tok
        return self._model, self._tok

    def _prompt(self, tok, messages: list[dict]) -> str:
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"

    def generate(self, conversations: list[list[dict]], params: dict) -> list[tuple[str, int, int]]:
        import torch

        with self._lock:
            model, tok = self._load()
            max_new = int(params.get("max_completion_tokens") or params.get("max_tokens") or 256)
            temperature = float(params.get("temperature", 0.0) or 0.0)
            kwargs = {"max_new_tokens": max_new, "do_sample": temperature > 0, "pad_token_id": tok.pad_token_id}
            if temperature > 0:
                kwargs.update(temperature=temperature, top_p=float(params.get("top_p", 1.0)))
            if params.get("seed") is not None:
                torch.manual_seed(int(params["seed"]))
            out = []
            for start in range(0, len(conversations), self.batch_size):
                prompts = [self._prompt(tok, m) for m in conversations[start: start + self.batch_size]]
                enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
                with torch.inference_mode():
                    gen = model.generate(**enc, **kwargs)
                new = gen[:, enc["input_ids"].shape[1]:]
                for row in range(new.shape[0]):
                    text = tok.decode(new[row], skip_special_tokens=True)
                    n_in = int(enc["attention_mask"][row].sum())
                    n_out = int((new[row] != tok.pad_token_id).sum())
                    out.append((text, n_in, n_out))
            return out

    async def complete_many(self, conversations, params, extra, stats) -> list:
        from graders.judge_http import JudgeCallError

        started = time.monotonic()
        try:
            outs = await asyncio.to_thread(self.generate, conversations, params)
        except Exception as err:  # noqa: BLE001 - a model that won't load or run fails these rows, typed
            error = JudgeCallError("judge_server_error", f"local judge model '{self.model_name}' failed: "
                                   f"{type(err).__name__}: {err}")
            return [error] * len(conversations)
        elapsed = time.monotonic() - started
        stats.add(calls=len(outs), latency=elapsed, prompt_tokens=sum(o[1] for o in outs),
                  completion_tokens=sum(o[2] for o in outs))
        return [o[0] for o in outs]

    def close(self):
        self._model = self._tok = None
