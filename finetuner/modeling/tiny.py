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

UNK, PAD, IM_START, IM_END, EOT = "<unk>", "<pad>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"
SPECIAL_TOKENS = [UNK, PAD, IM_START, IM_END, EOT]

# Every character the model can see: space..~ (95 printable ASCII) plus newline and tab.
CHARS = [chr(c) for c in range(32, 127)] + ["\n", "\t"]

# ChatML. The assistant content *and* its closing <|im_end|> sit inside
# {% generation %} so TRL's `assistant_only_loss=True` trains the model to answer
# and to stop; the trailing newline after <|im_end|> is not trained.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def tiny_path() -> str:
    """Folder of the committed tiny model, for `from_pretrained`."""
    needed = ["config.json", "model.safetensors", "tokenizer.json"]
    missing = [name for name in needed if not (TINY_DIR / name).is_file()]
    if missing:
        raise ModelError(
            f"The built-in tiny model is incomplete: {', '.join(missing)} missing in {TINY_DIR}. "
            "Rebuild it with `python scripts/build_tiny.py` (CPU, about 5 minutes)."
        )
    return str(TINY_DIR)


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
    return tok
