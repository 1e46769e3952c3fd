"""A tiny, randomly initialised Qwen2 causal LM with a locally built tokenizer, for tests.

Nothing is downloaded: the tokenizer is a byte-level BPE trained in about a second on a small
built-in corpus, and the model is built from a ``Qwen2Config``. The tokenizer speaks ChatML with the
same tool-calling layout as Qwen2.5 (tools listed in the system message inside ``<tools></tools>``,
assistant calls as ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``, tool results as
``<tool_response>`` blocks in a user turn), so code written for Qwen2.5 runs against it unchanged::

    from agentlightning_testing.tiny_model import create_tiny_model

    path = create_tiny_model(tmp_path_factory.getbasetemp() / "tiny-qwen2")
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)

The folder is created once and reused: a call whose folder already holds a model built with the same
arguments returns at once. Needs ``torch``, ``transformers`` and ``tokenizers``, and the embedded backend's chat template
(``pip install "agentlightning-testing[tiny-model]"``); they are imported when the function runs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Union

__all__ = [
    "END_OF_TURN",
    "PAD_TOKEN",
    "SPECIAL_TOKENS",
    "START_OF_TURN",
    "TOOL_CALL_END",
    "TOOL_CALL_START",
    "create_tiny_model",
]

START_OF_TURN = "<|im_start|>"
END_OF_TURN = "<|im_end|>"
"""The end-of-sequence token: generation stops after it."""
PAD_TOKEN = "<|endoftext|>"
TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
TOOL_RESPONSE_START = "<tool_response>"
TOOL_RESPONSE_END = "</tool_response>"

SPECIAL_TOKENS = (PAD_TOKEN, START_OF_TURN, END_OF_TURN)
"""Control tokens (dropped by ``decode(..., skip_special_tokens=True)``)."""
TAG_TOKENS = (TOOL_CALL_START, TOOL_CALL_END, TOOL_RESPONSE_START, TOOL_RESPONSE_END)
"""Single-token tags that stay in decoded text, as in Qwen2.5's tokenizer."""

# About a kilobyte of text in the shapes a chat agent sees, so common words, digits, JSON and the
# chat markup get their own merges and sequences stay short.
_CORPUS_LINES = [
    "You are a helpful assistant. Answer the question and show your work.",
    "What is 12+7? The answer is 19. What is 3 * 4? The answer is 12.",
    "The quick brown fox jumps over the lazy dog. A fast agent learns from its rewards.",
    'Call the calculator tool: {"name": "calculator", "arguments": {"expression": "2+2"}}',
    '{"type": "function", "function": {"name": "get_weather", "description": "Get the weather", '
    '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}',
    "def add(a: int, b: int) -> int:\n    return a + b\n\nprint(add(1, 2))",
    "import json\nresult = json.loads(text)\nfor key, value in result.items():\n    print(key, value)",
    "The weather in Paris is sunny, 21 degrees. The weather in London is rainy, 14 degrees.",
    "Let me think step by step. First, add the numbers. Then, check the result. Finally, answer.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 25 50 100 1000",
    "user assistant system tool function arguments name content role message response",
    "Question: How many legs does a spider have? Answer: A spider has eight legs.",
    "Please search the database for the order number and return its status.",
    "SELECT name, price FROM products WHERE price < 10 ORDER BY price;",
]


def _spec(seed: int, hidden_size: int, num_layers: int, vocab_size: int, context_length: int) -> Dict[str, Any]:
    return {
        "format": 1,  # bump when the files written below change
        "seed": seed,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "vocab_size": vocab_size,
        "context_length": context_length,
    }


_MARKER = "agl-tiny-model.json"


def _marker_matches(path: Path, spec: Dict[str, Any]) -> bool:
    try:
        return bool(json.loads((path / _MARKER).read_text()) == spec)
    except (OSError, ValueError):
        return False


def _build_tokenizer(vocab_size: int) -> Any:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from agentlightning_embedded.chat_template import CHATML_TOOLS_TEMPLATE

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS) - len(TAG_TOKENS),
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS_LINES * 4, trainer=trainer)
    tokenizer.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in TAG_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=END_OF_TURN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[START_OF_TURN],
        chat_template=CHATML_TOOLS_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=1 << 30,
    )


def _build_model(tokenizer: Any, spec: Dict[str, Any]) -> Any:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    end_of_turn_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    pad_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    hidden = int(spec["hidden_size"])
    heads = max(2, hidden // 32)
    config = Qwen2Config(
        vocab_size=len(tokenizer),  # every id the model can emit decodes
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=int(spec["num_layers"]),
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=int(spec["context_length"]),
        tie_word_embeddings=True,
        # Wider than the usual 0.02, so greedy decoding wanders over the vocabulary instead of repeating one token.
        initializer_range=0.2,
        bos_token_id=None,
        eos_token_id=end_of_turn_id,
        pad_token_id=pad_id,
    )
    torch.manual_seed(int(spec["seed"]))
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=[end_of_turn_id, pad_id], pad_token_id=pad_id)
    return model.eval()


def create_tiny_model(
    path: Union[str, os.PathLike[str]],
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_size: int = 512,
    context_length: int = 2048,
) -> Path:
    """Create (once) a tiny Qwen2 causal LM and its tokenizer in the folder ``path`` and return it.

    Defaults: hidden size 64, 2 layers, a byte-level BPE vocabulary of about 500 ids (``vocab_size`` is the
    target), 2048 positions; about 0.16M parameters, 0.6 MB on disk, a few hundred tokens/s on one CPU
    thread. Weights are drawn wider than usual (std 0.2) so greedy decoding produces varied text, with
    multi-byte characters split across tokens, instead of repeating one token.

    The folder loads with ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` and
    serves with ``agl serve-model --model PATH``. Weights are random (``seed`` picks them), so the text it
    generates is gibberish but reproducible. A folder already holding a model made with the same
    arguments is returned as is; concurrent callers are safe (the files are written to a temporary folder
    that is then renamed). A non-empty folder that was not made by this function is never overwritten.
    """
    target = Path(path).expanduser().resolve()
    spec = _spec(seed, hidden_size, num_layers, vocab_size, context_length)
    if _marker_matches(target, spec):
        return target
    if target.exists() and any(target.iterdir()) and not (target / _MARKER).exists():
        raise FileExistsError(f"{target} is not empty and does not hold a tiny model; pick another folder")

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the model is meant to be shared
    try:
        tokenizer = _build_tokenizer(vocab_size)
        model = _build_model(tokenizer, spec)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / _MARKER).write_text(json.dumps(spec))
        if target.exists():
            # An outdated tiny model (other arguments or an older format): replace it.
            shutil.rmtree(target, ignore_errors=True)
        try:
            staging.rename(target)
        except OSError:
            # Another process finished first; use its copy when it matches.
            if not _marker_matches(target, spec):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def chat_messages_example() -> List[Dict[str, Any]]:
    """A short conversation with a tool call and its result, handy to exercise a chat template."""
    return [
        {"role": "system", "content": "You are a calculator assistant."},
        {"role": "user", "content": "What is 12+7?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression": "12+7"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "19"},
    ]
