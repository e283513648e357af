"""RAM's caption loss in the ``image_tagging`` task (``tagging.caption_loss: true``): checks and host-side inputs.

As the reference ``RAM.forward`` trains it: every sample draws one of its captions (the draw of the RAM++
alignment, :func:`mindram.data.teacher_features.pick_caption`: seeded by seed, epoch and record index); the
tags parsed from *that* caption (``parse_label_id``, one id list per caption, :class:`RAMTaggingJson`'s
``parse_labels``) are the tag encoder's text, the caption the decoder's target, while ``union_label_id`` stays
the tagging target. The tag text and the caption are tokenised here, on the host, with RAM's caption tokenizer
(:class:`mindram.models.ram.BertTokenizer`) into :class:`mindram.losses.caption_loss.CaptionLoss`' arrays
(padded to 40 tokens, so one graph serves every batch).
"""
import numpy as np
from mindspore import Tensor

from ..data.teacher_features import pick_caption, record_captions
from ..errors import ConfigError, DataError
from ..losses.caption_loss import CaptionLoss
from ..models.ram.captioning import check_caption_model, check_tokenizer, default_tokenizer


def caption_tokenizer(model, vocab=None):
    """RAM's caption tokenizer (``tagging.caption_tokenizer``: a ``vocab.txt`` or a folder holding one; None:
    bert-base-uncased as :func:`mindram.models.ram.captioning.default_tokenizer` finds it), checked against the
    model's caption vocabulary."""
    from ..models.ram.bert_tokenizer import BertTokenizer  # pylint: disable=import-outside-toplevel
    tokenizer = default_tokenizer() if vocab is None else BertTokenizer.from_pretrained(vocab)
    check_tokenizer(model, tokenizer)
    return tokenizer


def check_caption_training(model, source):
    """ConfigError unless ``model`` is a RAM with caption modules and ``source`` has parse tags per caption."""
    try:
        check_caption_model(model)
    except ConfigError as e:
        raise ConfigError(f"tagging.caption_loss: {e}") from e
    if not hasattr(source, "parse_labels"):
        raise ConfigError(f"tagging.caption_loss: train_dataset {type(source).__name__} has no parse tags; the caption "
                          f"loss needs RAMTaggingJson annotations with parse_label_id (one tag-id list per caption)")


def caption_inputs(source, tag_names, tokenizer, indices, seed, epoch):
    """:class:`CaptionLoss`' inputs after ``image_embeds`` (int32 Tensors) for the records ``indices`` of a
    training batch of ``epoch`` (module docstring)."""
    tags, captions = [], []
    for index in np.asarray(indices).reshape(-1).tolist():
        options = record_captions(source[index].caption)
        parsed = source.parse_labels[index]
        if parsed is None or len(parsed) != len(options):
            raise DataError(f"train_dataset record {index}: tagging.caption_loss needs parse_label_id with one tag-id "
                            f"list per caption ({len(options)} caption(s), "
                            f"{'none' if parsed is None else len(parsed)} parse list(s))")
        pick = pick_caption(len(options), seed, epoch, index)
        captions.append(options[pick])
        tags.append([tag_names[i] for i in parsed[pick]])
    return tuple(Tensor(array) for array in CaptionLoss.inputs(tokenizer, tags, captions))
