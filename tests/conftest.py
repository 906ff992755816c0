"""Shared test setup: offline, no analytics, `gpu` tests skipped without CUDA."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# Tokenizers for data tests: the built-in model's char tokenizer, built without its asset folder, with the
# tiny model's ChatML template ({% generation %} markers), without the markers (like most Hub models), or
# with no template at all.
def _tokenizer(template):
    from finetuner.modeling.tiny import build_tokenizer

    tok = build_tokenizer()
    tok.chat_template = template
    return tok


@pytest.fixture(scope="session")
def gen_tok():
    from finetuner.modeling.tiny import CHAT_TEMPLATE

    return _tokenizer(CHAT_TEMPLATE)


@pytest.fixture(scope="session")
def plain_tok():
    from finetuner.modeling.tiny import CHAT_TEMPLATE

    return _tokenizer(CHAT_TEMPLATE.replace("{%- generation %}", "").replace("{%- endgeneration %}", ""))


@pytest.fixture(scope="session")
def bare_tok():
    return _tokenizer(None)


# The real small model (`smollm2-135m`): converted once into the model cache (scripts/setup.sh does it; the first
# test to ask does it otherwise). Its absence fails the `real` tier rather than skipping it: CI runs that tier.
@pytest.fixture(scope="session")
def real_model() -> str:
    from finetuner.modeling.load import resolve_model_path

    return resolve_model_path("smollm2-135m")


@pytest.fixture(scope="session")
def real_tok(real_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(real_model)
