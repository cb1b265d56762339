"""Text to token ids and back, on the `tokenizers` library, with chat templates in jinja2.

Two sources build a `Tokenizer`:

* `from_gguf_metadata`: a GGUF file stores no `tokenizer.json`, only llama.cpp's description of
  the vocabulary. We rebuild from it the tokenizer llama.cpp runs, so ids match what the GGUF
  model was trained and quantized with:

    reader = gguf.GGUFReader(path)
    tok = from_gguf_metadata({k: f.contents() for k, f in reader.fields.items()})

* `from_hf_folder`: a Hugging Face tokenizer folder (`tokenizer.json`, `tokenizer_config.json`,
  and `chat_template.jinja` where transformers 5 writes the template).

Chat templates render the way transformers renders them (sandboxed jinja2, `trim_blocks`,
`lstrip_blocks`, `raise_exception`, `tojson`), so a prompt is byte for byte the text the model
saw in fine-tuning.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.sandbox
import tokenizers
from gguf import TokenType
from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers

from dspark_jax.io.hf import CheckpointError

# SentencePiece writes a space as this character inside its pieces.
_SPM_SPACE = "\u2581"

# Texts of markers that end an assistant turn in the chat formats we know, taken from the
# texts llama.cpp puts in its end-of-generation set. `<|endoftext|>` is there because base-model
# vocabularies end documents with it and a model that emits it has nothing more to say.
_END_OF_TURN_TEXTS = (
  "<|im_end|>",
  "<end_of_turn>",
  "<|eot_id|>",
  "<|eom_id|>",
  "<|end|>",
  "<|endoftext|>",
  "<|end_of_text|>",
  "<EOT>",
)


@dataclasses.dataclass(frozen=True, eq=False)
class Tokenizer:
  """A `tokenizers.Tokenizer` plus what generation needs around it.

  Attributes:
    backend: the `tokenizers` object that does the work; special tokens live in its added
      vocabulary, so they are matched whole in text and dropped by `decode(skip_special=True)`.
    bos_id: beginning-of-sequence id, or None when the vocabulary has none.
    eos_id: end-of-sequence id, or None.
    pad_id: padding id, or None.
    add_bos: whether `encode` puts `bos_id` first by default.
    chat_template: jinja2 source of the chat template, or None.
    stop_ids: ids that end an assistant turn: `eos_id` and the end-of-turn markers present.
  """

  backend: tokenizers.Tokenizer
  bos_id: int | None
  eos_id: int | None
  pad_id: int | None
  add_bos: bool
  chat_template: str | None
  stop_ids: tuple[int, ...]

  @property
  def vocab_size(self) -> int:
    """Number of ids the tokenizer can produce, added (special) tokens included."""
    return self.backend.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
    """Token ids of `text`.

    Args:
      text: the text; special-token texts in it (like "<|im_end|>") become their single ids.
      add_bos: put `bos_id` first; None follows `self.add_bos`.

    Returns:
      The ids, `[T]`.
    """
    # The backend's own post-processor (a HF `tokenizer.json` may have one) is bypassed so that
    # BOS is decided in one place, here.
    ids = self.backend.encode(text, add_special_tokens=False).ids
    if self.add_bos if add_bos is None else add_bos:
      if self.bos_id is None:
        raise ValueError("add_bos=True, but this tokenizer has no BOS token")
      ids.insert(0, self.bos_id)
    return ids

  def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
    """Text of `ids` (`[T]`, any iterable of ints, numpy arrays included).

    Args:
      ids: token ids.
      skip_special: drop control tokens (BOS, end-of-turn markers, ...) from the text.
    """
    return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special)

  def apply_chat_template(
    self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True, **extra: Any
  ) -> str:
    """The prompt text for a conversation, rendered from `chat_template`.

    Args:
      messages: dicts with at least "role" and "content".
      add_generation_prompt: end with the opening of an assistant turn.
      **extra: further template variables (such as `tools` or `enable_thinking`).

    Raises:
      ValueError: the tokenizer has no chat template.
      jinja2.TemplateError: the template rejected the conversation (`raise_exception`).
    """
    if self.chat_template is None:
      raise ValueError(
        "this tokenizer has no chat template (the GGUF has no 'tokenizer.chat_template' key, or "
        "the folder no chat_template.jinja / tokenizer_config.json 'chat_template'); format the "
        "prompt yourself or use a chat-tuned model's tokenizer"
      )
    special = {"bos_token": self.bos_id, "eos_token": self.eos_id, "pad_token": self.pad_id}
    # A template tests e.g. `bos_token is defined`, so a missing token stays undefined, not None.
    names = {k: self.backend.id_to_token(i) for k, i in special.items() if i is not None}
    return _compile_template(self.chat_template).render(
      messages=list(messages), add_generation_prompt=add_generation_prompt, **names, **extra
    )

  def encode_chat(
    self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True
  ) -> list[int]:
    """Ids of the rendered conversation, with exactly one BOS when `add_bos` is set.

    Many templates write the BOS text themselves (Gemma's starts with "{{ bos_token }}"); that
    text is a special token, so it already encodes to `bos_id`, and adding another would give
    the model a "<bos><bos>" prefix it never saw in training.
    """
    ids = self.encode(self.apply_chat_template(messages, add_generation_prompt), add_bos=False)
    if self.add_bos and self.bos_id is not None and ids[:1] != [self.bos_id]:
      ids.insert(0, self.bos_id)
    return ids


# ----------------------------------------------------------------------------- chat templates


class _GenerationTag(jinja2.ext.Extension):
  """Accepts `{% generation %}...{% endgeneration %}`.

  transformers templates use the tag to mark assistant text for training loss masks; for
  rendering only its body matters.
  """

  tags = {"generation"}

  def parse(self, parser: jinja2.parser.Parser) -> list[jinja2.nodes.Node]:
    next(parser.stream)
    return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _raise_exception(message: str) -> None:
  raise jinja2.TemplateError(message)


def _tojson(
  value: Any,
  ensure_ascii: bool = False,
  indent: int | None = None,
  separators: tuple[str, str] | None = None,
  sort_keys: bool = False,
) -> str:
  # jinja2's own `tojson` escapes HTML characters ("<" -> "\u003c"), which would change the
  # text of tool schemas compared with what the model was trained on.
  return json.dumps(
    value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
  )


def _strftime_now(fmt: str) -> str:
  return datetime.datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=16)
def _compile_template(source: str) -> jinja2.Template:
  """The template compiled in an environment configured like transformers'."""
  env = jinja2.sandbox.ImmutableSandboxedEnvironment(
    trim_blocks=True,
    lstrip_blocks=True,
    extensions=[_GenerationTag, jinja2.ext.loopcontrols],
  )
  env.filters["tojson"] = _tojson
  env.globals["raise_exception"] = _raise_exception
  env.globals["strftime_now"] = _strftime_now
  return env.from_string(source)


# ----------------------------------------------------------------------------- GGUF


def _gpt2_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
  return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _smollm_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
  # llama.cpp's "smollm": every digit on its own (regex `\p{N}`), then the GPT-2 split.
  return pre_tokenizers.Sequence(
    [pre_tokenizers.Digits(individual_digits=True), _gpt2_pre_tokenizer()]
  )


# `tokenizer.ggml.pre` values of byte-level vocabularies we support. "default" is what old
# converters wrote for a vocabulary they could not identify, nearly always a GPT-2 style one,
# so it gets the GPT-2 split. (llama.cpp's own fallback for "default" also isolates punctuation
# runs, turning "don't" into "don", "'", "t"; that matches no HF tokenizer, so we do not copy it.)
_BYTE_LEVEL_PRE_TOKENIZERS = {
  "default": _gpt2_pre_tokenizer,
  "gpt-2": _gpt2_pre_tokenizer,
  "smollm": _smollm_pre_tokenizer,
}


def _byte_level_bpe(metadata: Mapping[str, Any], tokens: list[str]) -> tokenizers.Tokenizer:
  """GPT-2 style BPE: tokens spelled in the byte alphabet, merges listed in the file."""
  pre = metadata.get("tokenizer.ggml.pre", "default")
  if pre not in _BYTE_LEVEL_PRE_TOKENIZERS:
    raise ValueError(
      f"unsupported GGUF pre-tokenizer tokenizer.ggml.pre={pre!r} for a 'gpt2' vocabulary; "
      f"supported: {sorted(_BYTE_LEVEL_PRE_TOKENIZERS)}"
    )
  merges = []
  for line in metadata.get("tokenizer.ggml.merges", ()):
    pair = tuple(line.split(" "))
    if len(pair) != 2:
      raise ValueError(f"GGUF merge {line!r} is not two tokens separated by one space")
    merges.append(pair)
  backend = tokenizers.Tokenizer(models.BPE(_vocab(tokens), merges))
  backend.pre_tokenizer = _BYTE_LEVEL_PRE_TOKENIZERS[pre]()
  backend.decoder = decoders.ByteLevel()
  return backend


def _merges_from_scores(
  tokens: Sequence[str], types: Sequence[int], scores: Sequence[float]
) -> list[tuple[str, str]]:
  """BPE merges that reproduce SentencePiece's score-driven merging.

  SentencePiece BPE repeatedly joins the adjacent pair whose concatenation is the
  highest-scoring piece in the vocabulary. The same happens in a ranked-merge BPE when every
  split of a piece into two pieces is a merge ranked by the piece's score, best first.

  Only normal pieces take part: control and user-defined tokens are matched whole before BPE
  runs, and byte pieces are reached only through byte fallback, never by merging.
  """
  normal = {t: i for i, t in enumerate(tokens) if types[i] == TokenType.NORMAL}
  ranked = []
  for piece, index in normal.items():
    for cut in range(1, len(piece)):
      left, right = piece[:cut], piece[cut:]
      if left in normal and right in normal:
        ranked.append((-scores[index], index, cut, left, right))
  ranked.sort()
  return [(left, right) for *_, left, right in ranked]


def _sentencepiece_bpe(metadata: Mapping[str, Any], tokens: list[str]) -> tokenizers.Tokenizer:
  """SentencePiece-style BPE ("llama" in GGUF): scores instead of merges, "▁" for spaces."""
  scores = metadata.get("tokenizer.ggml.scores")
  if scores is None or len(scores) != len(tokens):
    raise ValueError("a 'llama' GGUF vocabulary needs tokenizer.ggml.scores, one per token")
  types = _token_types(metadata, tokens)
  unk_id = metadata.get("tokenizer.ggml.unknown_token_id")
  model = models.BPE(
    _vocab(tokens),
    _merges_from_scores(tokens, types, scores),
    unk_token=tokens[unk_id] if unk_id is not None else None,
    fuse_unk=True,
    byte_fallback=True,
  )
  backend = tokenizers.Tokenizer(model)
  # llama.cpp's default is to prefix a space; Gemma's files turn it off.
  prefix = bool(metadata.get("tokenizer.ggml.add_space_prefix", True))
  steps = [normalizers.Replace(" ", _SPM_SPACE)]
  # The normalizer runs on each stretch of text between special tokens, so the prefix follows
  # every special token too, as llama.cpp does.
  backend.normalizer = normalizers.Sequence(
    [normalizers.Prepend(_SPM_SPACE), *steps] if prefix else steps
  )
  undo = [decoders.Replace(_SPM_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
  backend.decoder = decoders.Sequence([*undo, decoders.Strip(" ", 1, 0)] if prefix else undo)
  return backend


_GGUF_BUILDERS = {"gpt2": _byte_level_bpe, "llama": _sentencepiece_bpe}


def _vocab(tokens: Sequence[str]) -> dict[str, int]:
  vocab = {}
  for i, token in enumerate(tokens):
    if vocab.setdefault(token, i) != i:
      # One text cannot map to two ids in `tokenizers`; ids after it would silently shift.
      raise ValueError(f"token {token!r} appears twice in the vocabulary (ids {vocab[token]}, {i})")
  return vocab


def _token_types(metadata: Mapping[str, Any], tokens: Sequence[str]) -> list[int]:
  types = metadata.get("tokenizer.ggml.token_type")
  if types is None:
    return [TokenType.NORMAL] * len(tokens)
  if len(types) != len(tokens):
    raise ValueError(f"{len(types)} token types for {len(tokens)} tokens")
  return list(types)


def _add_marker_tokens(
  backend: tokenizers.Tokenizer, tokens: Sequence[str], types: Sequence[int]
) -> None:
  """Registers control and user-defined tokens as added tokens, matched whole in raw text.

  llama.cpp splits text on these before tokenizing the pieces between them. Control (and
  unknown) tokens are special: dropped when decoding with `skip_special`. User-defined ones
  (Gemma's "\\n\\n", space runs, "<table>") are ordinary text that happens to be one token.
  """
  special = {TokenType.CONTROL, TokenType.UNKNOWN}
  backend.add_special_tokens(
    [
      AddedToken(t, special=True, normalized=False)
      for t, k in zip(tokens, types, strict=True)
      if k in special
    ]
  )
  backend.add_tokens(
    [
      AddedToken(t, special=False, normalized=False)
      for t, k in zip(tokens, types, strict=True)
      if k == TokenType.USER_DEFINED
    ]
  )


def _stop_ids(
  backend: tokenizers.Tokenizer, eos_id: int | None, extra: Iterable[int | None] = ()
) -> tuple[int, ...]:
  """`eos_id`, `extra` and the special tokens named in `_END_OF_TURN_TEXTS`, sorted."""
  special = {
    token.content: i for i, token in backend.get_added_tokens_decoder().items() if token.special
  }
  ids = {i for i in (eos_id, *extra) if i is not None}
  ids.update(special[text] for text in _END_OF_TURN_TEXTS if text in special)
  return tuple(sorted(ids))


def from_gguf_metadata(metadata: Mapping[str, Any]) -> Tokenizer:
  """The tokenizer a GGUF file describes.

  Args:
    metadata: GGUF key -> value, as `{k: f.contents() for k, f in reader.fields.items()}` of a
      `gguf.GGUFReader` gives it. Only the `tokenizer.*` keys are read.

  Raises:
    ValueError: the vocabulary type (`tokenizer.ggml.model`, "gpt2" and "llama" supported) or
      the pre-tokenizer (`tokenizer.ggml.pre`) is one we cannot reproduce, or keys are missing.
  """
  kind = metadata.get("tokenizer.ggml.model")
  if kind not in _GGUF_BUILDERS:
    raise ValueError(
      f"unsupported GGUF tokenizer model tokenizer.ggml.model={kind!r}; "
      f"supported: {sorted(_GGUF_BUILDERS)}"
    )
  if "tokenizer.ggml.tokens" not in metadata:
    raise ValueError("the GGUF metadata has no tokenizer.ggml.tokens")
  tokens = list(metadata["tokenizer.ggml.tokens"])
  backend = _GGUF_BUILDERS[kind](metadata, tokens)
  _add_marker_tokens(backend, tokens, _token_types(metadata, tokens))

  bos_id = metadata.get("tokenizer.ggml.bos_token_id")
  eos_id = metadata.get("tokenizer.ggml.eos_token_id")
  # llama.cpp adds BOS to SentencePiece vocabularies unless the file says otherwise.
  add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", kind == "llama"))
  turn_ends = (metadata.get(f"tokenizer.ggml.{k}_token_id") for k in ("eot", "eom"))
  return Tokenizer(
    backend=backend,
    bos_id=bos_id,
    eos_id=eos_id,
    pad_id=metadata.get("tokenizer.ggml.padding_token_id"),
    add_bos=add_bos and bos_id is not None,
    chat_template=metadata.get("tokenizer.chat_template"),
    stop_ids=_stop_ids(backend, eos_id, turn_ends),
  )


# ----------------------------------------------------------------------------- HF folders


def _read_json(path: Path) -> dict[str, Any]:
  return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _chat_template(folder: Path, config: Mapping[str, Any]) -> str | None:
  """transformers 5 saves `chat_template.jinja`; older folders keep it in the config."""
  jinja_file = folder / "chat_template.jinja"
  if jinja_file.is_file():
    return jinja_file.read_text(encoding="utf-8")
  template = config.get("chat_template")
  if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}, ...]
    named = {t["name"]: t["template"] for t in template}
    template = named.get("default", next(iter(named.values()), None))
  return template


def from_hf_folder(path: str | Path) -> Tokenizer:
  """The tokenizer saved in a Hugging Face folder (e.g. by `save_pretrained`).

  Args:
    path: folder with `tokenizer.json` and optionally `tokenizer_config.json`,
      `special_tokens_map.json` and `chat_template.jinja`.
  """
  folder = Path(path)
  file = folder / "tokenizer.json"
  if not file.is_file():
    others = [
      n
      for n in ("tokenizer.model", "vocab.json", "tokenizer_config.json")
      if (folder / n).is_file()
    ]
    raise CheckpointError(
      f"{folder} has no tokenizer.json, the tokenizer file dspark-jax reads"
      + (f" (it has {', '.join(others)}: re-save with a fast tokenizer, " if others else " (")
      + "e.g. AutoTokenizer.from_pretrained(...).save_pretrained(folder))"
    )
  try:
    backend = tokenizers.Tokenizer.from_file(str(file))
  except Exception as e:  # the tokenizers library raises a bare Exception on a bad file
    raise CheckpointError(f"{file} is not a valid tokenizer file: {e}") from None
  config = _read_json(folder / "tokenizer_config.json")
  special_map = _read_json(folder / "special_tokens_map.json")

  def token_id(name: str) -> int | None:
    value = config.get(name, special_map.get(name))
    if isinstance(value, dict):  # an AddedToken serialized as {"content": ..., ...}
      value = value.get("content")
    return backend.token_to_id(value) if isinstance(value, str) else None

  bos_id, eos_id = token_id("bos_token"), token_id("eos_token")
  add_bos = config.get("add_bos_token")
  if add_bos is None:
    # No flag: the tokenizer.json post-processor is what transformers would apply.
    add_bos = backend.encode("", add_special_tokens=True).ids[:1] == [bos_id]
  return Tokenizer(
    backend=backend,
    bos_id=bos_id,
    eos_id=eos_id,
    pad_id=token_id("pad_token"),
    add_bos=bool(add_bos) and bos_id is not None,
    chat_template=_chat_template(folder, config),
    stop_ids=_stop_ids(backend, eos_id),
  )
