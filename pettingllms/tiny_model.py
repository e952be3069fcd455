"""The tiny built-in model: a Qwen2-architecture causal LM and its tokenizer, made locally.

pettingllms must run anywhere (CI, a laptop, a machine with no network), so the default
model is built here instead of downloaded: a byte-level BPE tokenizer trained in about a
second on a corpus generated below, and a randomly initialised Qwen2 model of a few hundred
thousand parameters. Its replies are noise, but every stage (chat template, batching,
assistant-only loss, LoRA, merging) runs on it exactly as on a real Qwen2 checkpoint.

    >>> path = tiny_model_path()            # built once, then reused from the cache
    >>> build_tiny_model("./tiny")          # or write a copy anywhere (`make-tiny-model`)

The build is deterministic: the same library versions write the same files, byte for byte.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

TINY_MODEL_NAME = "tiny-qwen2-v2"
"""Cache folder name; bump the version whenever the build below changes."""

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 3072
SEED = 0
ROPE_THETA = 20.0
"""RoPE base. Qwen2's 10,000 suits 32k-token contexts; with this model's 16-dim heads it leaves
half the rotary frequencies too slow to tell positions a few dozen tokens apart, and copying
text from a fixed distance back (an agent repeating the line a tool printed) then sits on a
loss plateau for 1,000+ steps or forever, depending on the seed. At 20 every frequency is
useful over the few hundred tokens an episode's prompt spans: in a plain training loop the
Sudoku demo's planner learned the copy within 600 steps for 8 of 8 seeds; at 10,000 (v1) it
had no exact copy after 1,000 steps (scripts/demo/README.md has the runs)."""

# Qwen2's pre-tokenizer split: contractions, words, single digits, punctuation runs,
# newlines, spaces. It must equal the one in transformers' `Qwen2Tokenizer`, because that
# class rebuilds the pre-tokenizer from its own defaults when it loads the folder.
QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# ChatML, as Qwen2 writes it. The {% generation %} markers let TRL's assistant_only_loss
# (and `return_assistant_tokens_mask`) find the assistant tokens: content plus <|im_end|>.
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


def tiny_model_path() -> Path:
    """Return the cached tiny model folder, building it on first use.

    The cache is `$PETTINGLLMS_CACHE` or `~/.cache/pettingllms`. The build happens in a
    temporary sibling folder that is renamed into place, so a reader never sees half a
    model and two processes racing to build it both end up with the same complete folder.
    """
    cache_dir = Path(os.environ.get("PETTINGLLMS_CACHE") or Path.home() / ".cache" / "pettingllms")
    target = cache_dir / TINY_MODEL_NAME
    if (target / "config.json").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{TINY_MODEL_NAME}-", dir=cache_dir))
    try:
        build_tiny_model(staging)
        os.rename(staging, target)
    except OSError:
        # Another process renamed its build into place first; theirs is identical.
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def build_tiny_model(output_dir: str | Path) -> Path:
    """Write the tiny model, tokenizer and generation config to `output_dir`; return it."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    output_dir = Path(output_dir)
    tokenizer = build_tiny_tokenizer()
    im_end, pad = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        rope_theta=ROPE_THETA,  # transformers 5 stores it as rope_parameters["rope_theta"]
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=im_end,
        pad_token_id=pad,
    )
    with torch.random.fork_rng(devices=[]):  # seed the weights, leave the caller's RNG alone
        torch.manual_seed(SEED)
        model = Qwen2ForCausalLM(config)
    # <|endoftext|> ends a turn too, as in Qwen2's own generation config.
    model.generation_config = GenerationConfig(eos_token_id=[im_end, pad], pad_token_id=pad)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def build_tiny_tokenizer():
    """Train the byte-level BPE tokenizer and wrap it as the `Qwen2Tokenizer` it loads as.

    Saving it under its own class name means `tokenizer_config.json` says `Qwen2Tokenizer`,
    which is what `AutoTokenizer` picks for a `qwen2` model anyway.
    """
    from transformers import Qwen2Tokenizer

    return Qwen2Tokenizer(
        tokenizer_object=train_bpe(),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        chat_template=CHAT_TEMPLATE,
        model_max_length=8192,
        clean_up_tokenization_spaces=False,
    )


def train_bpe():
    """Train a `tokenizers.Tokenizer` with Qwen2's normalizer, pre-tokenizer and decoder.

    Using Qwen2's exact pipeline is what makes `AutoTokenizer.from_pretrained` (which
    rebuilds it as `Qwen2Tokenizer`) give the same ids as the tokenizer trained here.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(generate_corpus(), trainer)
    return tokenizer


# --- the training corpus: text shaped like what the environments exchange ------------------

WORDS = (
    "the a an of to and in is it that for on with as you your this be are was we can not or by "
    "from at if all any one two three four five six seven eight nine ten zero first last "
    "move push pull box boxes goal goals target player wall walls floor grid map path route "
    "start end step steps turn turns agent agents plan planner executor action actions "
    "write read code coder tester test tests case cases function method class return value "
    "input output number numbers answer problem task solve solution check verify correct "
    "wrong error errors please think reason explain then next final result results each row "
    "rows column columns cell cells empty fill digit digits sum product list string strings "
    "integer integers print given find count length maximum minimum sort sorted order index "
    "left right up down top bottom position reach avoid obstacle shortest valid invalid "
    "format reply respond message user assistant system only must should will would could "
    "board puzzle sudoku square block unique missing place placed remaining state current "
    "previous history feedback passed failed score reward episode success true false none "
    "equation variable expression simplify compute calculate total average half double "
    "even odd prime divisible remainder fraction ratio percent area perimeter triangle circle "
    "apples books coins people days hours minutes miles price cost pay buy sell give take "
    "example examples constraint constraints line lines word words character characters "
    "because so but however therefore when where which while before after until again"
).split()
ACTIONS = ["Up", "Down", "Left", "Right"]
ROLES = ["system", "user", "assistant"]
UNICODE_SAMPLES = ["café", "naïve", "Straße", "déjà vu", "über", "日本語", "中文", "Ω≈π", "→ ←", "✓ ✗"]


def generate_corpus(documents: int = 3000) -> Iterator[str]:
    """Yield the deterministic training documents, cycling through every kind of text."""
    rng = random.Random(SEED)
    makers = [chat_document, python_document, grid_document, actions_document, math_document, english_document]
    for index in range(documents):
        yield makers[index % len(makers)](rng)


def english_document(rng: random.Random) -> str:
    """A few sentences of plain instructions, with the odd unicode word."""
    sentences = []
    for _ in range(rng.randint(2, 6)):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 14))]
        if rng.random() < 0.2:
            words.append(rng.choice(UNICODE_SAMPLES))
        sentences.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", ":"]))
    return " ".join(sentences)


def python_document(rng: random.Random) -> str:
    """A small Python function with a loop, a condition and a test."""
    name = "_".join(rng.sample(WORDS, 2))
    arg, other = rng.sample(["n", "x", "nums", "grid", "s", "values", "k"], 2)
    op = rng.choice(["+", "-", "*", "//", "%"])
    return (
        f"def {name}({arg}, {other}={rng.randint(0, 9)}):\n"
        f'    """Return the {rng.choice(WORDS)} of {arg}."""\n'
        f"    result = {rng.randint(0, 100)}\n"
        f"    for i in range(len({arg})):\n"
        f"        if {arg}[i] {rng.choice(['>', '<', '==', '!='])} {other}:\n"
        f"            result = result {op} {arg}[i]\n"
        f"    return result\n\n\n"
        f"assert {name}([{', '.join(str(rng.randint(0, 50)) for _ in range(4))}]) == {rng.randint(0, 99)}\n"
        f"print({name}(list(range({rng.randint(1, 20)}))))\n"
    )


def grid_document(rng: random.Random) -> str:
    """A Sokoban / path-planning style grid and the positions of its pieces."""
    height, width = rng.randint(4, 9), rng.randint(4, 9)
    rows = []
    for row in range(height):
        cells = []
        for column in range(width):
            edge = row in (0, height - 1) or column in (0, width - 1)
            cells.append("#" if edge else rng.choice("..._.__$@#*O"))
        rows.append(rng.choice(["", " "]).join(cells))
    position = f"({rng.randint(0, height)}, {rng.randint(0, width)})"
    return "Current grid:\n" + "\n".join(rows) + f"\nPlayer position: {position}\n"


def actions_document(rng: random.Random) -> str:
    """Action lists in the formats agents are asked to reply with."""
    actions = [rng.choice(ACTIONS) for _ in range(rng.randint(1, 10))]
    style = rng.randrange(3)
    if style == 0:
        return "Actions: [" + ", ".join(f'"{action}"' for action in actions) + "]"
    if style == 1:
        return "<answer>" + " ".join(actions) + "</answer>"
    return "\n".join(f"Step {i + 1}: {action}" for i, action in enumerate(actions))


def math_document(rng: random.Random) -> str:
    """Arithmetic, an equation and a boxed answer, the way math agents write them."""
    a, b = rng.randint(0, 999), rng.randint(1, 99)
    op = rng.choice(["+", "-", "*", "/"])
    value = {"+": a + b, "-": a - b, "*": a * b, "/": round(a / b, 3)}[op]
    return (
        f"Compute {a} {op} {b}. We have {a} {op} {b} = {value}.\n"
        f"Let x = {b}; then 2x^2 + {a} = {2 * b * b + a} and \\frac{{{a}}}{{{b}}} ≈ {a / b:.2f}.\n"
        f"The answer is \\boxed{{{value}}}."
    )


def chat_document(rng: random.Random) -> str:
    """A ChatML conversation whose turns are other kinds of corpus text."""
    makers = [python_document, grid_document, actions_document, math_document, english_document]
    turns = []
    for role in ROLES[rng.randrange(2) :]:
        content = rng.choice(makers)(rng)
        turns.append(f"<|im_start|>{role}\n{content}<|im_end|>\n")
    return "".join(turns)
