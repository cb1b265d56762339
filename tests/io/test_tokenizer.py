"""Tests of `dspark_jax.io.tokenizer`.

The oracle for the real models is transformers' own GGUF tokenizer loader, built from the same
file by independent code. Where the two disagree by design (transformers is not llama.cpp in two
corners, see `test_smollm2_digits_split_like_llama_cpp` and `test_gemma3_long_space_run`) the
expected ids are written out and checked by hand against the vocabulary.
"""

from __future__ import annotations

import dataclasses

import jinja2
import numpy as np
import pytest

from dspark_jax.io.gguf_file import read_gguf
from dspark_jax.io.tokenizer import Tokenizer, from_gguf_metadata, from_hf_folder

# ------------------------------------------------------------------------- synthetic vocabularies

SPM_SPACE = "\u2581"
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]
NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6  # llama.cpp token types


def spm_metadata(scores: dict[str, float], add_space_prefix: bool = False) -> dict:
  """A tiny SentencePiece ("llama") vocabulary: specials, 256 byte pieces, then `scores`."""
  specials = ["<unk>", "<s>", "</s>", "<end_of_turn>"]
  tokens = specials + BYTE_TOKENS + list(scores)
  return {
    "tokenizer.ggml.model": "llama",
    "tokenizer.ggml.pre": "default",
    "tokenizer.ggml.tokens": tokens,
    "tokenizer.ggml.scores": [0.0] * (len(specials) + 256) + list(scores.values()),
    "tokenizer.ggml.token_type": [UNKNOWN, CONTROL, CONTROL, CONTROL]
    + [BYTE] * 256
    + [NORMAL] * len(scores),
    "tokenizer.ggml.unknown_token_id": 0,
    "tokenizer.ggml.bos_token_id": 1,
    "tokenizer.ggml.eos_token_id": 2,
    "tokenizer.ggml.add_bos_token": True,
    "tokenizer.ggml.add_space_prefix": add_space_prefix,
  }


def spm_pieces(tok: Tokenizer, text: str) -> list[str]:
  return [tok.backend.id_to_token(i) for i in tok.encode(text, add_bos=False)]


PIECES = {SPM_SPACE: -1.0, "a": -1.0, "b": -1.0, "c": -1.0, "ab": -2.0}


def test_spm_merges_follow_scores():
  # "ab▁abc": after "ab" forms twice, "▁"+"ab" and "ab"+"c" compete; the higher score wins.
  prefer_space = from_gguf_metadata(spm_metadata({**PIECES, "▁ab": -3.0, "abc": -4.0}))
  prefer_abc = from_gguf_metadata(spm_metadata({**PIECES, "▁ab": -4.0, "abc": -3.0}))
  assert spm_pieces(prefer_space, "ab abc") == ["ab", "▁ab", "c"]
  assert spm_pieces(prefer_abc, "ab abc") == ["ab", "▁", "abc"]


def test_spm_byte_fallback_round_trip():
  tok = from_gguf_metadata(spm_metadata({**PIECES, "▁ab": -3.0}))
  # "é" is not a piece: its two UTF-8 bytes come out as byte tokens (ids 4 + byte).
  assert tok.encode("aé", add_bos=False) == [tok.backend.token_to_id("a"), 4 + 0xC3, 4 + 0xA9]
  for text in ["aé b", "😀 ab", "  c  "]:
    assert tok.decode(tok.encode(text)) == text


def test_spm_space_prefix():
  plain = from_gguf_metadata(spm_metadata({**PIECES, "▁ab": -3.0}))
  prefixed = from_gguf_metadata(spm_metadata({**PIECES, "▁ab": -3.0}, add_space_prefix=True))
  assert spm_pieces(plain, "ab") == ["ab"]
  assert spm_pieces(prefixed, "ab") == ["▁ab"]
  assert prefixed.decode(prefixed.encode("ab ab")) == "ab ab"


def test_spm_special_tokens_bos_and_stop_ids():
  tok = from_gguf_metadata(spm_metadata({**PIECES, "▁ab": -3.0}))
  ids = tok.encode("ab<end_of_turn>")
  assert ids == [1, tok.backend.token_to_id("ab"), 3]
  assert tok.decode(ids) == "ab"
  assert tok.decode(ids, skip_special=False) == "<s>ab<end_of_turn>"
  assert tok.decode(np.array(ids, np.int32)) == "ab"
  assert tok.stop_ids == (2, 3)
  assert tok.encode("ab", add_bos=False) == [tok.backend.token_to_id("ab")]
  assert tok.vocab_size == 4 + 256 + len(PIECES) + 1


def byte_alphabet() -> dict[int, str]:
  """GPT-2's printable spelling of each byte: printable Latin-1 bytes stand for themselves,
  the others take code points from 256 upwards, in byte order."""
  printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
  spelling = {b: chr(b) for b in printable}
  spelling.update({b: chr(256 + n) for n, b in enumerate(sorted(set(range(256)) - set(printable)))})
  return spelling


def gpt2_metadata(pre: str) -> dict:
  """A tiny byte-level vocabulary with merges "1 2" and "Ġ a" and one control token."""
  tokens = ["<|im_end|>", *byte_alphabet().values(), "12", "Ġa"]
  return {
    "tokenizer.ggml.model": "gpt2",
    "tokenizer.ggml.pre": pre,
    "tokenizer.ggml.tokens": tokens,
    "tokenizer.ggml.token_type": [CONTROL] + [NORMAL] * (len(tokens) - 1),
    "tokenizer.ggml.merges": ["1 2", "Ġ a"],
    "tokenizer.ggml.eos_token_id": 0,
  }


def test_gpt2_pre_tokenizers():
  default = from_gguf_metadata(gpt2_metadata("default"))
  smollm = from_gguf_metadata(gpt2_metadata("smollm"))
  pieces = lambda tok, text: [tok.backend.id_to_token(i) for i in tok.encode(text)]
  assert pieces(default, "12 a<|im_end|>") == ["12", "Ġa", "<|im_end|>"]
  assert pieces(smollm, "12 a<|im_end|>") == ["1", "2", "Ġa", "<|im_end|>"]
  assert smollm.decode(smollm.encode("12 a\né<|im_end|>")) == "12 a\né"
  assert smollm.add_bos is False and smollm.bos_id is None and smollm.stop_ids == (0,)


def test_unsupported_tokenizer_model():
  metadata = {"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": ["[CLS]", "a"]}
  with pytest.raises(ValueError, match="tokenizer.ggml.model='bert'"):
    from_gguf_metadata(metadata)


def test_unsupported_pre_tokenizer():
  with pytest.raises(ValueError, match="tokenizer.ggml.pre='qwen2'"):
    from_gguf_metadata(gpt2_metadata("qwen2"))


# ----------------------------------------------------------------------------- chat templates

GEMMA_LIKE_TEMPLATE = """{{ bos_token }}
{%- for message in messages %}
  {% if message['role'] not in ['user', 'model'] %}
    {{ raise_exception('roles must be user or model, got ' + message['role']) }}
  {% endif %}
<start_of_turn>{{ message['role'] }}
{{ message['content'] | trim }}<end_of_turn>
{% endfor %}
{% if add_generation_prompt %}
<start_of_turn>model
{% endif %}"""


def test_chat_template_renders_like_transformers_env():
  tok = dataclasses.replace(
    from_gguf_metadata(spm_metadata({**PIECES, "▁ab": -3.0})), chat_template=GEMMA_LIKE_TEMPLATE
  )
  messages = [{"role": "user", "content": " ab "}, {"role": "model", "content": "c"}]
  # trim_blocks drops the newline after a block tag, lstrip_blocks the indent before it.
  expected = "<s><start_of_turn>user\nab<end_of_turn>\n<start_of_turn>model\nc<end_of_turn>\n"
  assert tok.apply_chat_template(messages, add_generation_prompt=False) == expected
  assert tok.apply_chat_template(messages).endswith("<end_of_turn>\n<start_of_turn>model\n")
  with pytest.raises(jinja2.TemplateError, match="got system"):
    tok.apply_chat_template([{"role": "system", "content": "x"}])


def test_encode_chat_single_bos():
  base = from_gguf_metadata(spm_metadata({**PIECES, "▁ab": -3.0}))
  messages = [{"role": "user", "content": "ab"}]
  with_bos_text = dataclasses.replace(base, chat_template=GEMMA_LIKE_TEMPLATE)
  without_bos_text = dataclasses.replace(base, chat_template="{{ messages[0]['content'] }}")
  rendered = with_bos_text.apply_chat_template(messages)
  assert rendered.startswith("<s>")
  assert with_bos_text.encode(rendered).count(1) == 2  # what a naive render + encode does
  ids = with_bos_text.encode_chat(messages)
  assert ids[0] == 1 and ids.count(1) == 1
  assert without_bos_text.encode_chat(messages) == [1, base.backend.token_to_id("ab")]


def test_no_chat_template_is_a_clear_error():
  tok = from_gguf_metadata(spm_metadata(PIECES))
  with pytest.raises(ValueError, match="no chat template"):
    tok.apply_chat_template([{"role": "user", "content": "hi"}])


# ----------------------------------------------------------------------------- real models

TEXTS = [
  "Hello, world!",
  "The quick brown fox jumps over the lazy dog.",
  "12345",
  "Pi is 3.14159 and 2024-05-17 is a date; 1,000,000 people.",
  "  leading spaces and trailing spaces   ",
  "tabs\tand\nnewlines\n\n\nhere",
  "def f(x):\n    return x * 2\n\n\nclass A:\n\tpass\n",
  "for (int i = 0; i < n; ++i) { sum += a[i]; }",
  "Ünïcödé façade naïve coöperate",
  "日本語のテキストと中文混合",
  "Привет, мир! Как дела?",
  "مرحبا بالعالم",
  "emoji: 😀🎉👍🏽 and 👨‍👩‍👧‍👦 family",
  "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math",
  "I'm sure they'll've done it, won't they?",
  "MiXeD CaSe AND UPPER",
  "https://example.com/path?q=1&r=two#frag",
  "\u00a0non-breaking\u2009thin space",
  "a" * 50,
  "",
  " ",
  "\n",
  "<table><tr><td>cell</td></tr></table>",
  "zero-width\u200bjoiner and combining e\u0301",
  "\U0010fffd private use",
  "x" + " " * 20 + "y",
  "<|im_start|>user\nhi<|im_end|>",
  "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n",
  "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
  "<bos>text after bos",
  "<|endoftext|>",
]

CONVERSATIONS = {
  "system_user": [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "What is 2 + 2?"},
  ],
  "user_only": [{"role": "user", "content": "Write a haiku about JAX."}],
}


def gguf_metadata(path) -> dict:
  """The metadata as the reference reader gives it: `contents()` of every GGUFReader field."""
  import gguf

  return {k: f.contents() for k, f in gguf.GGUFReader(path).fields.items()}


def model_path(name: str):
  from dspark_jax.io import model_files

  try:
    return getattr(model_files, name)()
  except model_files.ModelFileError as e:
    pytest.skip(str(e))


def transformers_reference(path):
  transformers = pytest.importorskip("transformers")
  return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.fixture(scope="module")
def smollm2_path():
  return model_path("smollm2_135m_gguf")


@pytest.fixture(scope="module")
def gemma3_path():
  return model_path("gemma3_270m_gguf")


@pytest.fixture(scope="module")
def smollm2(smollm2_metadata):
  return from_gguf_metadata(smollm2_metadata)


@pytest.fixture(scope="module")
def smollm2_ref(smollm2_path):
  return transformers_reference(smollm2_path)


@pytest.fixture(scope="module")
def smollm2_metadata(smollm2_path):
  return gguf_metadata(smollm2_path)


@pytest.fixture(scope="module")
def gemma3(gemma3_path):
  return from_gguf_metadata(read_gguf(gemma3_path).metadata)


@pytest.fixture(scope="module")
def gemma3_ref(gemma3_path):
  return transformers_reference(gemma3_path)


def assert_same_ids(tok: Tokenizer, ref, texts: list[str]):
  mismatches = {t: (tok.encode(t), ref.encode(t)) for t in texts if tok.encode(t) != ref.encode(t)}
  assert not mismatches, f"ours vs transformers: {mismatches}"


def assert_round_trips(tok: Tokenizer, texts: list[str]):
  for text in texts:
    assert tok.decode(tok.encode(text, add_bos=False), skip_special=False) == text


@pytest.mark.real_model
def test_our_gguf_reader_gives_gguf_readers_metadata(smollm2_path, smollm2_metadata):
  """The loader reads metadata with `read_gguf` (fast); `gguf.GGUFReader` is the reference."""
  fast = read_gguf(smollm2_path).metadata
  assert fast == {k: v for k, v in smollm2_metadata.items() if not k.startswith("GGUF.")}
  # Equal values could still differ in type (True == 1); the loader sees the types too.
  assert {k: type(v) for k, v in fast.items()} == {k: type(smollm2_metadata[k]) for k in fast}


@pytest.mark.real_model
def test_smollm2_matches_transformers(smollm2, smollm2_ref):
  assert (smollm2.vocab_size, smollm2.bos_id, smollm2.eos_id, smollm2.pad_id) == (49152, 1, 2, 2)
  assert smollm2.add_bos is False
  assert smollm2.stop_ids == (0, 2)  # <|endoftext|>, <|im_end|>
  assert_same_ids(smollm2, smollm2_ref, TEXTS)
  assert smollm2.encode("<|im_start|>user\nhi<|im_end|>") == [1, 4093, 198, 6004, 2]
  for text in TEXTS:
    ids = smollm2.encode(text)
    assert smollm2.decode(ids) == smollm2_ref.decode(ids, skip_special_tokens=True)


@pytest.mark.real_model
def test_smollm2_round_trips(smollm2):
  assert_round_trips(smollm2, TEXTS)
  assert smollm2.decode(smollm2.encode("<|im_start|>user\nhi<|im_end|>")) == "user\nhi"


@pytest.mark.real_model
def test_smollm2_digits_split_like_llama_cpp(smollm2, smollm2_ref):
  # llama.cpp's "smollm" pre-tokenizer isolates every \p{N} character before the GPT-2 split,
  # so " ²" is "Ġ" + "Â²". transformers' GGUF loader skips that step and merges "ĠÂ" + "²";
  # the ids below are llama.cpp's (and those of SmolLM2's own tokenizer.json, whose
  # pre-tokenizer is Digits(individual_digits=True) + ByteLevel).
  text = "abc123def 42nd ²³"
  expected = [25276, 33, 34, 35, 1604, 216, 36, 34, 268, 216, 19133, 39050]
  assert smollm2.encode(text) == expected
  # If this starts failing, transformers has learnt "smollm": move `text` into TEXTS.
  assert smollm2_ref.encode(text) != expected


@pytest.mark.real_model
@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
def test_smollm2_chat_template_matches_transformers(smollm2, smollm2_ref, conversation):
  messages = CONVERSATIONS[conversation]
  text = smollm2.apply_chat_template(messages)
  assert text == smollm2_ref.apply_chat_template(
    messages, tokenize=False, add_generation_prompt=True
  )
  assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
  assert smollm2.encode_chat(messages) == smollm2_ref.encode(text, add_special_tokens=False)
  no_prompt = smollm2.apply_chat_template(messages, add_generation_prompt=False)
  assert no_prompt == smollm2_ref.apply_chat_template(
    messages, tokenize=False, add_generation_prompt=False
  )


@pytest.mark.real_model
def test_smollm2_from_hf_folder(smollm2, smollm2_ref, tmp_path):
  smollm2_ref.save_pretrained(tmp_path)
  tok = from_hf_folder(tmp_path)
  assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.add_bos) == (1, 2, 2, False)
  assert tok.stop_ids == smollm2.stop_ids
  assert tok.chat_template == smollm2.chat_template
  assert_same_ids(tok, smollm2_ref, TEXTS)
  for messages in CONVERSATIONS.values():
    assert tok.apply_chat_template(messages) == smollm2_ref.apply_chat_template(
      messages, tokenize=False, add_generation_prompt=True
    )


@pytest.mark.real_model
def test_gemma3_matches_transformers(gemma3, gemma3_ref):
  assert (gemma3.vocab_size, gemma3.bos_id, gemma3.eos_id, gemma3.pad_id) == (262144, 2, 1, 0)
  assert gemma3.add_bos is True
  assert gemma3.stop_ids == (1, 106)  # <eos>, <end_of_turn>
  assert_same_ids(gemma3, gemma3_ref, TEXTS)
  for text in TEXTS:
    ids = gemma3.encode(text)
    assert gemma3.decode(ids) == gemma3_ref.decode(ids, skip_special_tokens=True)


@pytest.mark.real_model
def test_gemma3_hand_checked_ids(gemma3):
  # Ids read off the GGUF vocabulary: 2 <bos>, 9259 "Hello", 1902 "▁world", 105/106 the turn
  # markers, 107 "\n", 2364 "user", 2202 "hi", 108 "\n\n"; 238 + b is the byte piece <0xb>.
  assert gemma3.encode("Hello world") == [2, 9259, 1902]
  turn = [105, 2364, 107, 2202, 106]
  assert gemma3.encode("<start_of_turn>user\nhi<end_of_turn>", add_bos=False) == turn
  assert gemma3.encode("\n\n", add_bos=False) == [108]
  private_use = "\U0010fffd"  # in no vocabulary: byte fallback
  assert gemma3.encode(private_use, add_bos=False) == [238 + b for b in private_use.encode()]
  assert_round_trips(gemma3, TEXTS)
  with pytest.raises(ValueError, match="no chat template"):  # this GGUF carries none
    gemma3.apply_chat_template(CONVERSATIONS["user_only"])


@pytest.mark.real_model
def test_gemma3_long_space_run(gemma3, gemma3_ref):
  # Runs of 2..31 spaces are user-defined tokens (ids 138..167) that llama.cpp and
  # SentencePiece match longest-first in the raw text (llama.cpp PR #8228 notes the same
  # difference), so 40 spaces are 31 + 9. transformers turns them into "▁▁.." merge pieces
  # instead and splits the run 16 + 24.
  text, expected = "x" + " " * 40 + "y", [236781, 167, 145, 236762]
  assert gemma3.encode(text, add_bos=False) == expected
  # If this starts failing, transformers now agrees: move `text` into TEXTS.
  assert gemma3_ref.encode(text, add_special_tokens=False) != expected


@pytest.mark.real_model
def test_gemma3_encode_chat_single_bos(gemma3):
  tok = dataclasses.replace(gemma3, chat_template=GEMMA_LIKE_TEMPLATE)
  ids = tok.encode_chat(CONVERSATIONS["user_only"])
  assert ids[:3] == [2, 105, 2364] and ids.count(2) == 1
  assert ids[-3:] == [105, tok.encode("model", add_bos=False)[0], 107]


@pytest.mark.real_model
def test_gemma3_from_hf_folder(gemma3_ref, tmp_path):
  gemma3_ref.save_pretrained(tmp_path)
  tok = from_hf_folder(tmp_path)
  # The saved config has no add_bos_token; BOS comes from the tokenizer.json post-processor.
  assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.add_bos) == (2, 1, 0, True)
  assert tok.stop_ids == (1, 106)
  assert tok.chat_template is None
  assert_same_ids(tok, gemma3_ref, TEXTS)
