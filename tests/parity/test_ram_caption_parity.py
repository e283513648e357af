"""RAM captioning parity with recognize-anything (tests/fixtures/ram_caption/make_fixtures.py).

The tiny reference RAM (tests/fixtures/ram) with caption modules over an 80-token vocabulary recorded the
three losses of ``RAM.forward`` on two batches, the arrays it fed its tag encoder and text decoder, and the
captions of Tag2Text's ``generate`` procedure (transformers 4.44) run on it: greedy and beam 3, predicted
and given tags, repetition penalties, min/max lengths that cut captions. Here the converted mindram model
must give the same losses (≤ 1e-4), the same input arrays, and identical token ids and strings.
"""
import functools

import numpy as np
import pytest
import torch
from mindspore import Tensor, nn

import mindram.models.ram as ram
from mindram.errors import ConfigError, DataError
from mindram.losses import TAG_LOSS, AsymmetricLoss, CaptionLoss, DistillationL1Loss, LabelSmoothedCrossEntropy
from mindram.models.ram import captioning
from mindram.models.ram.bert_tokenizer import BertTokenizer
from mindram.models.ram.convert import convert_state_dict
from mindram.trainer.train_step import TrainStep
from mindram.utils.graph import run_in_graph_mode
from tests.fixtures.ram import loader as ram_fixtures
from tests.fixtures.ram_caption import loader

TOL = 1e-4
ARRAYS = ("tag_ids", "tag_mask", "caption_ids", "caption_mask", "targets")
CASES = loader.generation_cases()


@functools.lru_cache(maxsize=None)
def model():
    config = loader.config()
    params, _ = convert_state_dict(loader.reference_state_dict(), config)
    built = ram.RAM(config)
    built.load_weights(params)
    built.set_train(False)
    return built


@functools.lru_cache(maxsize=None)
def encoder_output():
    """Swin tokens of the three fixture images (computed once), as numpy."""
    return model().visual_encoder(Tensor(loader.images())).asnumpy()


@functools.lru_cache(maxsize=None)
def tokenizer():
    return BertTokenizer(loader.VOCAB)


@pytest.mark.parametrize("index", [0, 1])
def test_caption_inputs_match_reference(index):
    entry, extra, reference = loader.loss_batch(index)
    names = captioning.parse_tag_names(extra["parse_tag"], model().tag_list)
    assert [" | ".join(n) for n in names] == entry["tag_text"]
    longest = captioning.caption_training_inputs(tokenizer(), names, entry["captions"], padding="longest")
    for key in ARRAYS:
        np.testing.assert_array_equal(longest[key], reference[key], err_msg=key)
    fixed = captioning.caption_training_inputs(tokenizer(), entry["tag_text"], entry["captions"])
    width = reference["caption_ids"].shape[1]
    assert fixed["caption_ids"].shape[1] == captioning.CAPTION_MAX_LENGTH
    for key in ARRAYS:   # the tag arrays always have 40 columns
        np.testing.assert_array_equal(fixed[key][:, :reference[key].shape[1]], reference[key], err_msg=key)
    assert (fixed["targets"][:, width:] == -100).all() and (fixed["caption_mask"][:, width:] == 0).all()
    assert captioning.prompt_length(tokenizer()) == loader.REPORT["prompt_length"] == 4


@pytest.mark.parametrize("index", [0, 1])
def test_losses_match_reference(index):
    entry, extra, reference = loader.loss_batch(index)
    net = model()
    embeds = Tensor(encoder_output()[entry["images"]])
    tokens = net.image_proj(embeds)
    loss = CaptionLoss(net)
    t2t = loss(tokens, *(Tensor(reference[k]) for k in ARRAYS)).asnumpy()
    padded = CaptionLoss.inputs(tokenizer(), entry["tag_text"], entry["captions"])   # 40 columns, same loss
    t2t_padded = loss(tokens, *(Tensor(a) for a in padded)).asnumpy()
    tag = AsymmetricLoss(**TAG_LOSS)(net.head_logits(embeds), Tensor(extra["image_tag"])).asnumpy()
    dis = DistillationL1Loss()(net.image_proj(embeds[:, 0]), Tensor(extra["clip_feature"])).asnumpy()
    for ours, key in ((t2t, "loss_t2t"), (t2t_padded, "loss_t2t"), (tag, "loss_tag"), (dis, "loss_dis")):
        assert abs(float(ours) - entry[key]) <= TOL, (key, float(ours), entry[key])


def test_label_smoothed_cross_entropy_is_torchs():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 5, 11)).astype(np.float32) * 3
    targets = rng.integers(0, 11, (2, 5)).astype(np.int32)
    targets[0, :2] = targets[1, 4] = -100
    expected = torch.nn.CrossEntropyLoss(label_smoothing=0.1, ignore_index=-100)(
        torch.from_numpy(logits).reshape(-1, 11), torch.from_numpy(targets).long().reshape(-1)).item()
    ours = LabelSmoothedCrossEntropy()(Tensor(logits), Tensor(targets)).asnumpy()
    assert abs(float(ours) - expected) <= 1e-6
    nothing = LabelSmoothedCrossEntropy()(Tensor(logits), Tensor(np.full((2, 5), -100, np.int32))).asnumpy()
    assert float(nothing) == 0.0   # torch: NaN; here a batch without counted tokens adds nothing


@pytest.mark.slow
def test_caption_loss_trains_in_a_graph_step():
    # its own random weights (the shared model stays untouched), one BERT layer per module: a small graph
    one_layer = {**ram_fixtures.REPORT["head"], "num_hidden_layers": 1}
    net = ram.RAM(loader.config(head_config=one_layer, caption_config={"num_hidden_layers": 1}))
    names = sorted(p.name for p in net.get_parameters())
    loss = CaptionLoss(net)
    _, _, reference = loader.loss_batch(0)
    tokens = Tensor(np.random.default_rng(1).standard_normal((3, 10, 512)).astype(np.float32))
    args = (tokens, *(Tensor(reference[k]) for k in ARRAYS))
    eager = float(loss(*args).asnumpy())
    params = net.tag_encoder.trainable_params() + net.text_decoder.trainable_params()
    step = TrainStep(loss, nn.Adam(params, learning_rate=1e-2))
    losses = [float(run_in_graph_mode(step, *args).asnumpy()) for _ in range(3)]
    assert abs(losses[0] - eager) <= TOL   # the graph computes the same loss
    assert losses[2] < losses[1] < losses[0]
    assert sorted(p.name for p in net.get_parameters()) == names


def _prompt(batch):
    ids = np.array(loader.REPORT["prompt_ids"][:-1], np.int32)
    ids[0] = loader.REPORT["special_ids"]["bos"]
    return np.tile(ids, (batch, 1))


@pytest.mark.parametrize("name", sorted(CASES))
def test_generated_ids_match_reference(name):
    case, net, special = CASES[name], model(), loader.REPORT["special_ids"]
    embeds = Tensor(encoder_output()[:2])
    if case["tags"] is None:
        assert captioning.predicted_tag_texts(net, embeds) == case["tags_used"]
    else:
        assert captioning.tag_texts(case["tags"], 2) == case["tags_used"]
    ids = captioning.generate_ids(net, net.image_proj(embeds), case["tag_ids"], case["tag_mask"], _prompt(2),
                                  special["sep"], special["pad"], case["num_beams"], case["max_length"],
                                  case["min_length"], case["repetition_penalty"])
    assert ids.tolist() == case["ids"]


@pytest.mark.slow
def test_generate_caption_strings_match_reference():
    np.testing.assert_array_equal(captioning.prompt_ids(tokenizer(), 2), _prompt(2))
    pixels = loader.images()[:2]
    for name in ("greedy_predicted_tags", "beam3_tag_strings_penalty"):   # the others: ids above
        case = CASES[name]
        captions, used = model().generate_caption(pixels, case["tags"], case["num_beams"], case["max_length"],
                                                  case["min_length"], case["repetition_penalty"], tokenizer())
        assert (captions, used) == (case["captions"], case["tags_used"]), name


def _one_line_error(error_type, match, call):
    with pytest.raises(error_type, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_models_without_caption_modules_are_refused():
    plus = ram.RAMPlus(ram_fixtures.fixture_config("ram_plus"))
    bare = ram.RAM(loader.config(caption_modules=False))
    pixels = loader.images()[:1]
    _one_line_error(ConfigError, "RAM\\+\\+ has none", lambda: plus.generate_caption(pixels, tokenizer=tokenizer()))
    _one_line_error(ConfigError, "RAM\\+\\+ has none", lambda: CaptionLoss(plus))
    _one_line_error(ConfigError, "caption_modules: false", lambda: bare.generate_caption(pixels, tokenizer=tokenizer()))
    _one_line_error(ConfigError, "caption_modules: false", lambda: CaptionLoss(bare))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"tags": "dog | cat"}, ConfigError, "one entry per image"),
    ({"tags": [["dog"]]}, ConfigError, "1 entries for 2 images"),
    ({"tags": [["dog"], ["cat", 3]]}, ConfigError, r"tags\[1\]"),
    ({"num_beams": 0}, ConfigError, "num_beams"),
    ({"max_length": 4}, ConfigError, "max_length: expected an int >= 5"),
    ({"max_length": 65}, ConfigError, "64 positions"),
    ({"min_length": -1}, ConfigError, "min_length"),
    ({"repetition_penalty": 0.0}, ConfigError, "repetition_penalty"),
    ({"pixel_values": np.zeros((2, 96, 96), np.float32)}, DataError, r"\(N, 3, H, W\)"),
])
def test_bad_generation_arguments(kwargs, error, match):
    kwargs = {"pixel_values": loader.images()[:2], "tokenizer": tokenizer(), **kwargs}
    _one_line_error(error, match, lambda: model().generate_caption(**kwargs))


def test_bad_training_inputs():
    tok = tokenizer()
    _one_line_error(ConfigError, "1 entries for 2 images", lambda: CaptionLoss.inputs(tok, [["dog"]], ["a", "b"]))
    _one_line_error(ConfigError, "non-empty list", lambda: CaptionLoss.inputs(tok, [], []))
    _one_line_error(ConfigError, "padding", lambda: CaptionLoss.inputs(tok, ["dog"], ["a"], padding=True))
    tag_list = ram_fixtures.REPORT["tag_indices"]   # 32 entries
    _one_line_error(ConfigError, r"shape \(N, 32\)", lambda: captioning.parse_tag_names(np.ones((2, 5)), tag_list))


def test_tokenizer_of_other_weights_is_refused(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text(loader.VOCAB.read_text(encoding="utf-8") + "extra\n", encoding="utf-8")
    _one_line_error(ConfigError, "the tokenizer has 80 tokens", lambda: model().generate_caption(
        loader.images()[:1], tokenizer=BertTokenizer(vocab)))
