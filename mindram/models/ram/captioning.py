"""RAM's image-tag-text generation: the caption inputs, and tag-guided captions by greedy or beam search.

RAM carries Tag2Text's caption modules (docs/ram.md#captioning): ``tag_encoder`` reads the tag text
(``' | '``-joined names, ``[ENC]`` first, 40 tokens) with cross-attention to the projected image tokens
``image_proj(visual_encoder(x))``; ``text_decoder`` writes the caption with cross-attention to that encoding.

Training (the reference ``RAM.forward``): caption ids padded (``'longest'``, at most 40), first token ``[DEC]``;
targets are the ids with ``[PAD]`` and the first ``prompt_length`` positions set to -100
(:func:`caption_training_inputs`; the loss is :class:`mindram.losses.CaptionLoss`).

Generation (``Tag2Text.generate`` as transformers 4.44 runs it): the prompt ``[DEC] a picture of`` (the
tokenized prompt, first id → ``[DEC]``, last ``[SEP]`` dropped), then one token per step from the
decoder's last position, recomputed over the whole prefix (as the reference, whose
``prepare_inputs_for_generation`` never receives the cache). Logits processors in transformers' order:
repetition penalty (on the logits for greedy, on the log-probabilities for beam search: a score s of a
token already in the sequence becomes s·p if s < 0 else s/p), then ``min_length`` (``[SEP]`` forbidden
while the sequence, prompt included, is shorter). ``max_length`` counts the prompt too. Beam search is
transformers' ``BeamSearchScorer`` (length_penalty 1.0, early_stopping False, ``num_beams`` hypotheses
per image, the best returned). Decoding: ``decode(skip_special_tokens=True)``, then the first
``len(prompt)`` characters cut off.

Unlike the reference run on transformers >= 4.27, each image's beams attend to that image's tag
encoding for any batch size (there, beyond the first image every beam sees image 0's; see
tests/fixtures/ram_caption/make_fixtures.py).
"""
import weakref

import numpy as np
from mindspore import Tensor, nn, ops

from ...errors import ConfigError, DataError
from ...utils.graph import run_in_graph_mode
from ...utils.validation import check_int, check_positive_int

PROMPT = "a picture of "
TAG_MAX_LENGTH = 40
CAPTION_MAX_LENGTH = 40
IGNORE_INDEX = -100
LENGTH_PENALTY = 1.0
WIDTH_STEP = 32


# ---- inputs ----
def check_caption_model(model):
    """A ConfigError unless ``model`` is a RAM with its caption modules."""
    if getattr(model, "is_plus", False):
        raise ConfigError("captioning needs RAM's caption modules; RAM++ has none (use a RAM model, e.g. "
                          "ram_swin_l_384, built with caption_modules: true)")
    if getattr(model, "text_decoder", None) is None:
        raise ConfigError("this RAM has no caption modules (its config has caption_modules: false); build it with "
                          "RAMConfig(caption_modules=True) and weights that hold tag_encoder/text_decoder")


def tag_texts(tags, batch_size):
    """One tag text per image from ``tags``: a list with, per image, a tag text (``'dog | cat'``) or a list of
    tag names (joined with ``' | '``)."""
    if isinstance(tags, (str, bytes)) or not isinstance(tags, (list, tuple)):
        raise ConfigError(f"tags: expected a list with one entry per image (a tag text or a list of tag names), "
                          f"got {type(tags).__name__}")
    if len(tags) != batch_size:
        raise ConfigError(f"tags: {len(tags)} entries for {batch_size} images")
    texts = []
    for i, entry in enumerate(tags):
        if isinstance(entry, str):
            texts.append(entry)
        elif isinstance(entry, (list, tuple)) and all(isinstance(name, str) for name in entry):
            texts.append(" | ".join(entry))
        else:
            raise ConfigError(f"tags[{i}]: expected a tag text or a list of tag names (strings), got {entry!r}")
    return texts


def parse_tag_names(parse_tag, tag_list):
    """Names of the 1-entries of each multi-hot row of ``parse_tag`` (N, K), in tag-index order (the reference's
    tag text of a training caption)."""
    parse_tag = np.asarray(parse_tag)
    if parse_tag.ndim != 2 or parse_tag.shape[1] != len(tag_list):
        raise ConfigError(f"parse_tag: expected shape (N, {len(tag_list)}), got {parse_tag.shape}")
    return [[tag_list[i] for i in np.flatnonzero(row == 1)] for row in parse_tag]


def encode_tags(tokenizer, texts):
    """Tag texts → (ids, mask) int32 (B, 40): padded to 40, truncated, ``[ENC]`` in place of ``[CLS]``."""
    encoded = tokenizer(list(texts), padding="max_length", truncation=True, max_length=TAG_MAX_LENGTH)
    ids = np.array(encoded["input_ids"], np.int32)
    ids[:, 0] = tokenizer.enc_token_id
    return ids, np.asarray(encoded["attention_mask"], np.int32)


def prompt_length(tokenizer, prompt=PROMPT):
    """Tokens of ``[CLS] prompt`` (the reference's ``len(tokenizer(prompt).input_ids) - 1``)."""
    return int(tokenizer(prompt)["input_ids"].shape[1]) - 1


def prompt_ids(tokenizer, batch_size, prompt=PROMPT):
    """(B, P) int32 generation prompt: the tokenized prompt with ``[DEC]`` first and its ``[SEP]`` dropped."""
    ids = np.array(tokenizer([prompt] * batch_size)["input_ids"], np.int32)
    ids[:, 0] = tokenizer.bos_token_id
    return ids[:, :-1]


def caption_training_inputs(tokenizer, tags, captions, prompt=PROMPT, padding="max_length"):
    """The arrays of :class:`mindram.losses.CaptionLoss` for a batch, as the reference ``RAM.forward`` builds them.

    ``tags``: per image a list of tag names or a tag text (see :func:`parse_tag_names` for multi-hot rows);
    ``captions``: one string per image. ``padding``: ``"max_length"`` (40 columns: one graph shape for every
    batch) or ``"longest"`` (the reference's); the loss is the same, the extra columns are masked and ignored.
    Returns int32 arrays ``tag_ids``, ``tag_mask`` (B, 40), ``caption_ids``, ``caption_mask``, ``targets`` (B, L).
    """
    captions = [captions] if isinstance(captions, str) else list(captions)
    if not captions or not all(isinstance(c, str) for c in captions):
        raise ConfigError(f"captions: expected a non-empty list with one string per image, got {captions!r:.80}")
    if padding not in ("max_length", "longest"):
        raise ConfigError(f"padding: expected 'max_length' or 'longest', got {padding!r}")
    tag_ids, tag_mask = encode_tags(tokenizer, tag_texts(tags, len(captions)))
    encoded = tokenizer(captions, padding=padding, truncation=True, max_length=CAPTION_MAX_LENGTH)
    caption_ids = np.array(encoded["input_ids"], np.int32)
    caption_ids[:, 0] = tokenizer.bos_token_id
    targets = np.where(caption_ids == tokenizer.pad_token_id, IGNORE_INDEX, caption_ids).astype(np.int32)
    targets[:, :prompt_length(tokenizer, prompt)] = IGNORE_INDEX
    return {"tag_ids": tag_ids, "tag_mask": tag_mask, "caption_ids": caption_ids,
            "caption_mask": np.asarray(encoded["attention_mask"], np.int32), "targets": targets}


# ---- search (numpy, over a step function: (N, T) ids → (N, V) float32 logits of the last position) ----
def _log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def process_scores(ids, scores, min_length, eos_token_id, repetition_penalty):
    """transformers' RepetitionPenalty then MinLength processors on (N, V) ``scores`` (a new array)."""
    scores = np.array(scores, np.float32)
    if repetition_penalty != 1.0:
        rows = np.arange(ids.shape[0])[:, None]
        seen = scores[rows, ids]
        scores[rows, ids] = np.where(seen < 0, seen * repetition_penalty, seen / repetition_penalty)
    if min_length > 0 and ids.shape[1] < min_length:
        scores[:, eos_token_id] = -np.inf
    return scores


def greedy_search(step, prompt, max_length, min_length, eos_token_id, pad_token_id, repetition_penalty=1.0):
    """(B, T ≤ max_length) ids: argmax each step; a row that has emitted ``[SEP]`` is padded until all have."""
    ids = np.asarray(prompt, np.int32)
    unfinished = np.ones(ids.shape[0], bool)
    while True:
        scores = process_scores(ids, step(ids), min_length, eos_token_id, repetition_penalty)
        tokens = np.where(unfinished, scores.argmax(axis=-1), pad_token_id).astype(np.int32)
        ids = np.concatenate([ids, tokens[:, None]], axis=1)
        unfinished &= (tokens != eos_token_id) & (ids.shape[1] < max_length)
        if not unfinished.any():
            return ids


class BeamHypotheses:
    """The ``num_beams`` best finished hypotheses of one image (transformers' ``BeamHypotheses``)."""

    def __init__(self, num_beams):
        self.num_beams, self.beams, self.worst_score = num_beams, [], 1e9

    def add(self, ids, sum_logprobs, generated_len):
        score = sum_logprobs / generated_len ** LENGTH_PENALTY
        if len(self.beams) < self.num_beams or score > self.worst_score:
            self.beams.append((score, ids))
            if len(self.beams) > self.num_beams:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst_score = ranked[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs, cur_len, prompt_len):
        """early_stopping=False: no running beam can still beat the worst kept hypothesis."""
        if len(self.beams) < self.num_beams:
            return False
        return self.worst_score >= best_sum_logprobs / (cur_len - prompt_len) ** LENGTH_PENALTY

    def best(self):
        return sorted(self.beams, key=lambda beam: beam[0])[-1][1]


def beam_search(step, prompt, num_beams, max_length, min_length, eos_token_id, pad_token_id, repetition_penalty=1.0):
    """(B, T ≤ max_length) ids of each image's best hypothesis, laid out as transformers' ``finalize`` does.

    ``step`` sees B·num_beams rows, image b's beams at rows b·num_beams … (b+1)·num_beams − 1.
    """
    batch = prompt.shape[0]
    ids = np.repeat(np.asarray(prompt, np.int32), num_beams, axis=0)
    prompt_len = ids.shape[1]
    beam_scores = np.zeros((batch, num_beams), np.float32)
    beam_scores[:, 1:] = -1e9
    beam_scores = beam_scores.reshape(-1)
    hypotheses = [BeamHypotheses(num_beams) for _ in range(batch)]
    done = np.zeros(batch, bool)
    keep = 2 * num_beams  # transformers: max(2, 1 + number of eos ids) · num_beams
    while True:
        scores = process_scores(ids, _log_softmax(step(ids)), min_length, eos_token_id, repetition_penalty)
        scores = (scores + beam_scores[:, None]).reshape(batch, -1)
        vocab = scores.shape[1] // num_beams
        order = np.argsort(-scores, axis=1, kind="stable")[:, :keep]
        top = np.take_along_axis(scores, order, axis=1)
        cur_len = ids.shape[1] + 1
        next_scores = np.zeros((batch, num_beams), np.float32)
        next_tokens = np.full((batch, num_beams), pad_token_id, np.int32)
        next_rows = np.zeros((batch, num_beams), np.int64)
        for b in range(batch):
            if done[b]:
                continue
            filled = 0
            for rank in range(keep):
                token, row = int(order[b, rank] % vocab), b * num_beams + int(order[b, rank] // vocab)
                if token == eos_token_id:
                    if rank < num_beams:
                        hypotheses[b].add(ids[row].copy(), float(top[b, rank]), cur_len - prompt_len)
                else:
                    next_scores[b, filled], next_tokens[b, filled], next_rows[b, filled] = top[b, rank], token, row
                    filled += 1
                if filled == num_beams:
                    break
            done[b] = hypotheses[b].is_done(float(top[b].max()), cur_len, prompt_len)
        beam_scores = next_scores.reshape(-1)
        ids = np.concatenate([ids[next_rows.reshape(-1)], next_tokens.reshape(-1, 1)], axis=1)
        if done.all() or ids.shape[1] >= max_length:
            break
    for b in np.flatnonzero(~done):
        for row in range(b * num_beams, (b + 1) * num_beams):
            hypotheses[b].add(ids[row].copy(), float(beam_scores[row]), ids.shape[1] - prompt_len)
    best = [h.best() for h in hypotheses]
    width = min(max(len(h) for h in best) + 1, max_length)
    out = np.full((batch, width), pad_token_id, np.int32)
    for b, hyp in enumerate(best):
        out[b, :len(hyp)] = hyp
        if len(hyp) < width:
            out[b, len(hyp)] = eos_token_id
    return out


# ---- the model side ----
class DecoderStep(nn.Cell):
    """``text_decoder`` logits at one position: ``(ids (N, W), context (N, 40, H), position (1,)) → (N, V)``.

    The searches run it on the prefix padded to a fixed width W (≥ max_length, rounded up to a multiple of
    32): the decoder is causal, so the logits at ``position`` only see the prefix, and one compiled graph
    serves every step. Holds the decoder without renaming its parameters.
    """

    def __init__(self, text_decoder):
        super().__init__(auto_prefix=False)
        self.text_decoder = text_decoder

    def construct(self, ids, context, position):
        hidden = self.text_decoder.bert(ids, context)
        hidden = ops.gather(hidden, position, 1)
        return self.text_decoder.cls(hidden, self.text_decoder.bert.embeddings.word_embeddings.weight).squeeze(1)


_STEP_CELLS = weakref.WeakKeyDictionary()


def decoder_step(model, context, num_beams, max_length, pad_token_id):
    """The step function of the searches: ``text_decoder`` over the whole prefix (compiled once per shape, see
    :class:`DecoderStep`), each row attending to its image's tag encoding ``context`` (B, 40, H) repeated per
    beam."""
    cell = _STEP_CELLS.get(model.text_decoder)
    if cell is None:
        cell = _STEP_CELLS[model.text_decoder] = DecoderStep(model.text_decoder)
    rows = context if num_beams == 1 else ops.repeat_interleave(context, num_beams, 0)
    width = min(-(-max_length // WIDTH_STEP) * WIDTH_STEP, model.config.caption_config.max_position_embeddings)

    def step(ids):
        padded = np.full((ids.shape[0], width), pad_token_id, np.int32)
        padded[:, :ids.shape[1]] = ids
        position = Tensor(np.array([ids.shape[1] - 1], np.int32))
        return run_in_graph_mode(cell, Tensor(padded), rows, position).asnumpy().astype(np.float32)
    return step


def pixel_array(model, pixel_values):
    """(N, 3, H, W) float32 numpy of an array, a Tensor, or images for ``model.image_processor``."""
    if isinstance(pixel_values, Tensor):
        pixel_values = pixel_values.asnumpy()
    elif not isinstance(pixel_values, np.ndarray):
        pixel_values = model.image_processor(pixel_values)
    pixels = np.asarray(pixel_values, np.float32)
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise DataError(f"pixel_values: expected images of shape (N, 3, H, W), got shape {pixels.shape}")
    return pixels


def predicted_tag_texts(model, embeds):
    """The model's own tag text per image: its current vocabulary, thresholds and delete_tag_index (as
    ``generate_tag``'s English output)."""
    vocabulary = model.vocabulary()
    scores = ops.sigmoid(model.head_logits(embeds, vocabulary.label_embed)).asnumpy()
    return [" | ".join(vocabulary.names[i] for i in idx) for idx in vocabulary.select(scores)]


def check_tokenizer(model, tokenizer):
    """A ConfigError unless the tokenizer's ids (vocabulary + [DEC]/[ENC]) are the caption modules' vocabulary."""
    vocab_size = model.config.caption_config.vocab_size
    if len(tokenizer) != vocab_size:
        raise ConfigError(f"the tokenizer has {len(tokenizer)} tokens ({tokenizer!r}), the caption modules' vocabulary "
                          f"{vocab_size} (caption_config.vocab_size); pass the tokenizer of these weights")


def check_generation_args(num_beams, max_length, min_length, repetition_penalty, prompt_len, max_positions):
    num_beams = check_positive_int(num_beams, "num_beams")
    max_length = check_int(max_length, "max_length", prompt_len + 1)
    if max_length > max_positions:
        raise ConfigError(f"max_length: {max_length} is more than the decoder's {max_positions} positions "
                          f"(caption_config.max_position_embeddings)")
    min_length = check_int(min_length, "min_length", 0)
    if isinstance(repetition_penalty, bool) or not isinstance(repetition_penalty, (int, float)) \
            or not repetition_penalty > 0:
        raise ConfigError(f"repetition_penalty: expected a number > 0, got {repetition_penalty!r}")
    return num_beams, max_length, min_length, float(repetition_penalty)


def generate_ids(model, image_embeds, tag_ids, tag_mask, prompt, eos_token_id, pad_token_id, num_beams=3,
                 max_length=30, min_length=10, repetition_penalty=1.0):
    """Caption token ids (B, T ≤ max_length) from projected image tokens (B, 1+L, 512), tokenized tag texts
    (B, 40) and the prompt ids (B, P), laid out as transformers' ``generate`` returns them (prompt first;
    rows that end early carry ``[SEP]`` then ``[PAD]``). Arguments are not checked (see :func:`generate_caption`)."""
    context = model.tag_encoder(Tensor(np.asarray(tag_ids, np.int32)), image_embeds,
                                Tensor(np.asarray(tag_mask, np.int32)))
    search_args = (max_length, min_length, eos_token_id, pad_token_id, repetition_penalty)
    step = decoder_step(model, context, num_beams, max_length, pad_token_id)
    if num_beams == 1:
        return greedy_search(step, prompt, *search_args)
    return beam_search(step, prompt, num_beams, *search_args)


def generate_caption(model, pixel_values, tags=None, num_beams=3, max_length=30, min_length=10,
                     repetition_penalty=1.0, tokenizer=None, prompt=PROMPT):
    """``(captions, tags_used)`` of a batch of images (see the module doc and ``RAMBase.generate_caption``)."""
    check_caption_model(model)
    tokenizer = default_tokenizer() if tokenizer is None else tokenizer
    check_tokenizer(model, tokenizer)
    pixels = pixel_array(model, pixel_values)
    batch = pixels.shape[0]
    prompt_batch = prompt_ids(tokenizer, batch, prompt)
    num_beams, max_length, min_length, repetition_penalty = check_generation_args(
        num_beams, max_length, min_length, repetition_penalty, prompt_batch.shape[1],
        model.config.caption_config.max_position_embeddings)
    texts = None if tags is None else tag_texts(tags, batch)
    embeds = model.visual_encoder(Tensor(pixels))
    if texts is None:
        texts = predicted_tag_texts(model, embeds)
    tag_ids, tag_mask = encode_tags(tokenizer, texts)
    ids = generate_ids(model, model.image_proj(embeds), tag_ids, tag_mask, prompt_batch, tokenizer.sep_token_id,
                       tokenizer.pad_token_id, num_beams, max_length, min_length, repetition_penalty)
    captions = [tokenizer.decode(row, skip_special_tokens=True)[len(prompt):] for row in ids]
    return captions, texts


_TOKENIZER = {}


def default_tokenizer():
    """RAM's caption tokenizer (bert-base-uncased + [DEC]/[ENC]), read once per process."""
    if "default" not in _TOKENIZER:
        from .bert_tokenizer import BertTokenizer
        _TOKENIZER["default"] = BertTokenizer.from_pretrained()
    return _TOKENIZER["default"]
