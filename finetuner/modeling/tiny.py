"""The built-in offline demo model ("model: tiny"): its tokenizer and where it lives.

The model itself is a ~0.45M-parameter Llama pre-trained on arithmetic by
`scripts/build_tiny.py` and committed under `finetuner/modeling/assets/tiny/`, so the app,
its demo and its tests work with no network and no Hugging Face Hub.

The tokenizer is character-level: one token per printable ASCII character (plus
newline and tab), so any text round-trips exactly and digits are single tokens,
which is what lets a tiny model learn addition at all.
"""

from __future__ import annotations

from pathlib import Path

from graders.errors import ModelError

TINY_DIR = Path(__file__).parent / "assets" / "tiny"
# "model: tiny-agent": tiny warm-started on calculator tool transcripts (`build_tiny.py --agent`), for Agent RFT.
TINY_AGENT_DIR = Path(__file__).parent / "assets" / "tiny-agent"

UNK, PAD, IM_START, IM_END, EOT = "<unk>", "<pad>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"
SPECIAL_TOKENS = [UNK, PAD, IM_START, IM_END, EOT]

# Every character the model can see: space..~ (95 printable ASCII) plus newline and tab.
CHARS = [chr(c) for c in range(32, 127)] + ["\n", "\t"]

# ChatML. The assistant content *and* its closing <|im_end|> sit inside
# {% generation %} so TRL's `assistant_only_loss=True` trains the model to answer
# and to stop; the trailing newline after <|im_end|> is not trained.
# Tools (Agent RFT) are listed in one short system line, "Tools: name(arg,...)", and a call is
# `<tool_call>{"name":...,"arguments":{...}}</tool_call>` inside the assistant turn, compact JSON:
# the model has 256 positions, and a whole tool-use exchange must fit in them. A conversation without
# tools renders exactly as before tools existed, so the demo's numbers do not move.
CHAT_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\nTools:' }}"
    "{%- for tool in tools %}{%- set f = tool.function if tool.function is defined else tool %}"
    "{{- ' ' + f.name + '(' + (f.parameters.properties | list | join(',') if f.parameters is defined else '') + ')' }}"
    "{%- endfor %}{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] or '' }}"
    "{%- for call in message.tool_calls or [] %}{%- set f = call.function if call.function is defined else call %}"
    "{{- '<tool_call>{\"name\":\"' + f.name + '\",\"arguments\":' }}"
    "{%- if f.arguments is string %}{{- f.arguments }}"
    "{%- else %}{{- f.arguments | tojson(separators=(',', ':')) }}{%- endif %}"
    "{{- '}</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# How transformers' `parse_response` (and so TRL's tool loop) reads an assistant turn of that template
# back into {"content", "tool_calls"}: the same shape as TRL's own templates for Qwen.
RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {"open": "<tool_call>", "close_pattern": r"</tool_call>\s*", "repeats": True,
                       "content": "json", "transform": {"type": "function", "function": "{content}"}},
        "content": {"close_pattern": r"<\|im_end\|>\s*", "content": "text"},
    },
}


def _asset(folder: Path, name: str, rebuild: str, minutes: int) -> str:
    needed = ["config.json", "model.safetensors", "tokenizer.json"]
    missing = [f for f in needed if not (folder / f).is_file()]
    if missing:
        raise ModelError(f"The built-in {name} model is incomplete: {', '.join(missing)} missing in {folder}. "
                         f"Rebuild it with `{rebuild}` (CPU, about {minutes} minutes).")
    return str(folder)


def tiny_path() -> str:
    """Folder of the committed tiny model, for `from_pretrained`."""
    return _asset(TINY_DIR, "tiny", "python scripts/build_tiny.py", 5)


def tiny_agent_path() -> str:
    """Folder of the committed tool-calling tiny model ("tiny-agent"), for `from_pretrained`."""
    return _asset(TINY_AGENT_DIR, "tiny-agent", "python scripts/build_tiny.py --agent", 8)


def build_tokenizer():
    """A fresh character-level tokenizer with the ChatML template (ids are stable across calls)."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    # Special tokens first (ids 0..4), then one id per character. A BPE model with
    # no merges and no pre-tokenizer splits text into single characters; characters
    # outside the vocab become <unk> instead of raising.
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + CHARS)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK, fuse_unk=False))
    # Without a decoder `tokenizers` joins tokens with spaces; Fuse concatenates them.
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token=UNK,
        pad_token=PAD,
        # <|im_end|> ends every chat turn, so generation stops there; <|endoftext|>
        # separates documents during pre-training. pad must differ from eos so
        # padding never hides a real end of turn.
        eos_token=IM_END,
        additional_special_tokens=[IM_START, EOT],
        clean_up_tokenization_spaces=False,
        model_max_length=256,
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.response_template = RESPONSE_TEMPLATE
    return tok
