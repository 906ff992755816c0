"""A judge that runs a local Hugging Face model (`provider: local` or `base_url: local`).

Same prompts and parsing as the HTTP judge, but `transformers` `generate` in this process: the model loads
on first use (never at build time), prompts go through the tokenizer's chat template, and a batch of
prompts is generated together with left padding. Generation runs in a worker thread so the judges' event
loop stays free; a lock keeps one generate at a time on the model.

With `structured` auto/on the judge does not generate at all (`choose_many`): each allowed answer (a label,
or each whole score in range) is scored as the assistant's whole reply, P(answer tokens + end of turn | prompt),
and the probabilities are normalised over the answers. Ending the reply is part of the answer so that "1"
does not also collect the mass of "10". The (prompt, answer) pairs run as padded forward passes of at most
`tokens_per_pass` tokens, and only the positions that predict answer tokens are projected onto the vocabulary.
"""

from __future__ import annotations

import asyncio
import threading
import time


class LocalBackend:
    def __init__(self, model: str, batch_size: int = 8):
        self.model_name, self.batch_size = model, batch_size
        self.tokens_per_pass = 8192  # padded tokens per scoring forward pass (`choose`)
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

    def _answer_ids(self, tok, messages, prompt: str, answer: str) -> list[int]:
        """The tokens the chat template writes for `answer` as the assistant's whole turn, end marker included."""
        text = None
        if getattr(tok, "chat_template", None):
            full = tok.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=False)
            if full.startswith(prompt):
                text = full[len(prompt):].rstrip("\n")
        if not text or answer not in text:  # a template that rewrites turns: the answer and the eos token
            text = answer + (tok.eos_token or "")
        return tok(text, add_special_tokens=False)["input_ids"]

    def _chunks(self, lengths: list[int]):
        """(start, stop) runs of consecutive sequences whose padded size (rows x longest) stays within
        `tokens_per_pass`, so memory follows the prompt length and not a fixed row count; one row at least."""
        start, width = 0, 0
        for i, n in enumerate(lengths):
            width = max(width, n)
            if i > start and (i - start + 1) * width > self.tokens_per_pass:
                yield start, i
                start, width = i, n
        if lengths:
            yield start, len(lengths)

    def choose(self, conversations: list[list[dict]], answers: list[str]) -> list[dict[str, float]]:
        """For each conversation, {answer: probability} over `answers` (they sum to 1)."""
        import torch

        with self._lock:
            model, tok = self._load()
            pairs = []  # (conversation index, answer, prompt ids, answer ids)
            for c, messages in enumerate(conversations):
                prompt = self._prompt(tok, messages)
                prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
                for answer in answers:
                    pairs.append((c, answer, prompt_ids, self._answer_ids(tok, messages, prompt, answer)))
            logp = [0.0] * len(pairs)
            for start, stop in self._chunks([len(p) + len(a) for _, _, p, a in pairs]):
                chunk = pairs[start:stop]
                seqs = [p + a for _, _, p, a in chunk]
                width = max(map(len, seqs))
                ids = torch.full((len(seqs), width), tok.pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(seqs), width), dtype=torch.long)
                keep = torch.zeros((len(seqs), width), dtype=torch.bool)  # the positions that predict answer tokens
                for row, (_, _, p, a) in enumerate(chunk):  # right padding: positions match an unpadded run
                    ids[row, :len(p) + len(a)] = torch.tensor(p + a)
                    mask[row, :len(p) + len(a)] = 1
                    keep[row, len(p) - 1: len(p) + len(a) - 1] = True
                with torch.inference_mode():
                    # only the answer positions go through the vocabulary head: full logits of every prompt
                    # position would be rows x width x vocab floats (tens of GB for a long prompt and a range)
                    logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                                   logits_to_keep=keep.to(model.device)).logits  # (answer tokens, vocab)
                    target = torch.tensor([t for _, _, _, a in chunk for t in a], device=logits.device)
                    picked = torch.log_softmax(logits.float(), dim=-1).gather(1, target[:, None])[:, 0]
                for row, part in enumerate(torch.split(picked, [len(a) for _, _, _, a in chunk])):
                    logp[start + row] = float(part.sum())
            out = []
            for c in range(len(conversations)):
                scores = torch.tensor([logp[i] for i, pair in enumerate(pairs) if pair[0] == c])
                probs = torch.softmax(scores, dim=0).tolist()
                out.append(dict(zip(answers, probs)))
            return out

    async def _in_thread(self, fn, conversations, *args):
        """(fn's outputs, seconds) off the event loop, or one typed error per row when the model fails."""
        from graders.judge_http import JudgeCallError

        started = time.monotonic()
        try:
            outs = await asyncio.to_thread(fn, conversations, *args)
        except Exception as err:  # noqa: BLE001 - a model that won't load or run fails these rows, typed
            error = JudgeCallError("judge_server_error", f"local judge model '{self.model_name}' failed: "
                                   f"{type(err).__name__}: {err}")
            return [error] * len(conversations), None
        return outs, time.monotonic() - started

    async def choose_many(self, conversations, answers, stats) -> list:
        outs, elapsed = await self._in_thread(self.choose, conversations, answers)
        if elapsed is not None:
            stats.add(calls=len(outs), latency=elapsed)
        return outs

    async def complete_many(self, conversations, params, extra, stats) -> list:
        outs, elapsed = await self._in_thread(self.generate, conversations, params)
        if elapsed is None:
            return outs
        stats.add(calls=len(outs), latency=elapsed, prompt_tokens=sum(o[1] for o in outs),
                  completion_tokens=sum(o[2] for o in outs))
        return [o[0] for o in outs]

    def close(self):
        self._model = self._tok = None
