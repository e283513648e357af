"""``python -m mindram.app --demo`` in a real browser.

The app runs as a subprocess on a free loopback port, from a folder holding the demos' ``final/`` models (saved
here from the demo configs, or copied from ``$MINDRAM_APP_DEMO_OUTPUT/output`` when that names a folder where
the demos were trained), and is driven in headless Chromium (Debian's ``chromium`` package, which .ci/run
installs) through Playwright's Python API. Each tab gets examples/images/demo4.jpg and its rendered results
(tags, the bar chart's values, the gallery) are compared with what mindram's Python API returns for the same
file; bad inputs must show their message while the server keeps serving. Screenshots of the tabs are saved in
the test's temporary folder and, when ``MINDRAM_APP_SCREENSHOTS=DIR`` is set, also in DIR (docs/images/app_*.png
are made that way).
"""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

from mindram import Trainer, pipeline
from mindram.app import AppService, ImageStore
from mindram.app.demo import CLIP_DEMO, STORE_DIR, TAGGER_DEMO, load_demo_models
from mindram.embeddings import RetrievalIndex
from mindram.errors import ConfigError, DataError
from mindram.pipeline.feature_extraction import FeatureExtractionPipeline
from tests.conftest import ROOT

pytestmark = pytest.mark.slow   # a server, a browser and model compilations: seconds per test

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DEMO_IMAGE = ROOT / "examples" / "images" / "demo4.jpg"
START_TIMEOUT_S = 240
RESULT_TIMEOUT_MS = 90_000
SCORE_TOLERANCE = 1e-4
LABELS = "red circle, blue square, green triangle, yellow cross, a train"
OPEN_SET_TAGS = "go-kart, horse racing"
OPEN_SET_DESCRIPTIONS = "go-kart: a small open racing car\ngo-kart: a kart on a track\n" \
                        "horse racing: horses racing\nhorse racing: jockeys on horses"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_output_dir(config):
    return Path(Trainer(args=str(config)).task.args.output_dir) / "final"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The app's working directory, holding ``output/{clip,ram}_demo_synthetic/final``."""
    folder = tmp_path_factory.mktemp("app")
    trained = os.environ.get("MINDRAM_APP_DEMO_OUTPUT")
    for config in (CLIP_DEMO, TAGGER_DEMO):
        final = demo_output_dir(config)   # relative to the working directory, as the demos write it
        if trained:
            shutil.copytree(Path(trained) / final, folder / final)
        else:
            Trainer(args=str(config)).model.save_pretrained(folder / final)
    return folder


@pytest.fixture(scope="module")
def app_process(workdir):
    """``python -m mindram.app --demo`` on a free loopback port, started (not yet serving); stopped after the
    module."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               GRADIO_TEMP_DIR=str(workdir / "gradio"), GRADIO_ANALYTICS_ENABLED="False")
    with open(workdir / "app.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "mindram.app", "--demo", "--port", str(port)],
                                   cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    process.url, process.log_path = f"http://127.0.0.1:{port}", workdir / "app.log"
    try:
        yield process
        assert process.poll() is None, f"the app stopped serving:\n{process.log_path.read_text()[-4000:]}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def reference(workdir, app_process):
    """The Python API on the same models as the app, built and compiled while the app starts."""
    del app_process   # requested first, so that it boots meanwhile
    clip = FeatureExtractionPipeline.load_model(str(workdir / demo_output_dir(CLIP_DEMO)))
    api = {"tagger": pipeline("image_tagging", model=str(workdir / demo_output_dir(TAGGER_DEMO))),
           "zero_shot": pipeline("zero_shot_image_classification", model=clip),
           "features": pipeline("feature_extraction", model=clip)}
    api["tagger"](DEMO_IMAGE)
    api["features"](images=DEMO_IMAGE, texts=["a red circle"])
    return api


@pytest.fixture(scope="module")
def app_url(app_process, reference):
    """The app's address once it answers."""
    del reference   # built while the app starts
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        assert app_process.poll() is None, \
            f"the app exited with {app_process.returncode}:\n{app_process.log_path.read_text()[-4000:]}"
        try:
            with urllib.request.urlopen(app_process.url + "/", timeout=2) as response:
                if response.status == 200:
                    return app_process.url
        except OSError:
            pass
        assert time.monotonic() < deadline, \
            f"the app did not answer within {START_TIMEOUT_S}s:\n{app_process.log_path.read_text()[-4000:]}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM, "Debian's chromium is not installed: apt-get install -y chromium (.ci/run installs it)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox",
                                                                               "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, app_url):
    """A fresh page of the app; fails the test if the page asks anything of another host."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    outside = []
    page.on("request", lambda r: None if r.url.startswith((app_url, "data:", "blob:")) else outside.append(r.url))
    page.goto(app_url)
    page.wait_for_selector("#tag-image")
    yield page
    context.close()
    assert not outside, f"the page requested other hosts: {outside[:5]}"


@pytest.fixture(scope="module")
def store_index(workdir, app_url):
    """The index of the store the app wrote at start-up."""
    del app_url
    return RetrievalIndex.from_dir(workdir / STORE_DIR / "vectors")


def screenshot(page, tmp_path, name):
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    target = os.environ.get("MINDRAM_APP_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(target) / path.name)
    assert path.stat().st_size > 10_000


def upload(page, elem_id, path):
    page.locator(f"#{elem_id} input[type=file]").set_input_files(str(path))


def wait_message(page, elem_id, text, exact=False):
    """Wait until the message line ``#elem_id`` contains (or, ``exact``, is) ``text``; return the line."""
    try:
        page.wait_for_function("([id, text, exact]) => { const e = document.getElementById(id); if (e === null) "
                               "return false; const shown = e.innerText.trim(); "
                               "return exact ? shown === text : shown.includes(text); }", arg=[elem_id, text, exact],
                               timeout=RESULT_TIMEOUT_MS)
    except PlaywrightTimeout:
        pytest.fail(f"#{elem_id} never showed {text!r}; it shows {page.inner_text('#' + elem_id)!r}")
    return page.inner_text(f"#{elem_id}")


def wait_until(page, getter, expected):
    """Wait until the JS function ``getter`` returns ``expected`` (a JSON value), or time out: the caller's
    assertion then shows the difference."""
    try:
        page.wait_for_function(f"expected => JSON.stringify(({getter})()) === JSON.stringify(expected)",
                               arg=expected, timeout=RESULT_TIMEOUT_MS)
    except PlaywrightTimeout:
        pass


def chart(page, elem_id, expected):
    """The bars of the ``gr.Label`` chart ``#elem_id`` (``[(label, value)]`` top to bottom), once they show the
    labels of ``expected``; checked against ``expected``'s labels and values."""
    wait_until(page, f"() => Array.from(document.querySelectorAll('#{elem_id} meter'))"
                     ".map(b => b.getAttribute('aria-label'))", [label for label, _ in expected])
    bars = page.eval_on_selector_all(f"#{elem_id} meter", "bars => bars.map("
                                     "b => [b.getAttribute('aria-label'), Number(b.getAttribute('value'))])")
    assert [label for label, _ in bars] == [label for label, _ in expected]
    np.testing.assert_allclose([v for _, v in bars], [v for _, v in expected], atol=SCORE_TOLERANCE)


def tag_bars(tags):
    return [(t["label"] if t["label_cn"] == t["label"] else f"{t['label']} / {t['label_cn']}", t["score"])
            for t in tags]


def test_tag_tab_shows_the_pipelines_tags(page, reference, tmp_path):
    every = reference["tagger"](DEMO_IMAGE, threshold=0.0)[0]
    # a threshold between the scores, so that the slider visibly selects a part of the tags
    threshold = float(np.floor(np.median([t["score"] for t in every]) * 100) / 100)
    expected = reference["tagger"](DEMO_IMAGE, threshold=threshold)[0]
    assert 0 < len(expected) < len(every)
    page.locator("#tag-per-tag input").uncheck()
    page.locator("#tag-threshold input[type=number]").fill(f"{threshold:.2f}")
    page.locator("#tag-threshold input[type=number]").press("Enter")
    upload(page, "tag-image", DEMO_IMAGE)   # an upload runs the tagger
    wait_message(page, "tag-message", f"{len(expected)} tag(s)", exact=True)
    assert page.input_value("#tag-english textarea") == " | ".join(t["label"] for t in expected)
    assert page.input_value("#tag-chinese textarea") == " | ".join(t["label_cn"] for t in expected)
    chart(page, "tag-chart", tag_bars(expected))
    screenshot(page, tmp_path, "app_tag")

    default = reference["tagger"](DEMO_IMAGE)[0]   # the per-tag thresholds, with the button
    page.locator("#tag-per-tag input").check()
    page.locator("#tag-run").click()
    wait_message(page, "tag-message", f"{len(default)} tag(s)" if default else "no tag passes the threshold",
                 exact=True)
    chart(page, "tag-chart", tag_bars(default))

    # open set: the typed tags and descriptions reach the pipeline (threshold 0: every tag passes)
    page.locator("#tag-per-tag input").uncheck()
    page.locator("#tag-threshold input[type=number]").fill("0")
    page.locator("#tag-threshold input[type=number]").press("Enter")
    page.locator("#tag-open-set textarea").fill(OPEN_SET_TAGS)
    page.locator("#tag-descriptions textarea").fill(OPEN_SET_DESCRIPTIONS)
    page.locator("#tag-run").click()
    wait_message(page, "tag-message", "2 tag(s)", exact=True)
    assert sorted(page.input_value("#tag-english textarea").split(" | ")) == ["go-kart", "horse racing"]


def test_open_set_text_fields_become_the_pipelines_arguments(reference):
    teacher = Trainer(args=str(TAGGER_DEMO)).task.teacher   # the demo's open-set CLIP (64-d, random)
    service = AppService(tagger=reference["tagger"].model, open_set_clip=teacher)
    expected = pipeline("image_tagging", model=reference["tagger"].model, open_set_tags=["go-kart", "horse racing"],
                        open_set_descriptions={"go-kart": ["a small open racing car", "a kart on a track"],
                                               "horse racing": ["horses racing", "jockeys on horses"]},
                        open_set_clip_model=teacher)(DEMO_IMAGE, threshold=0.0)[0]
    assert service.tag(str(DEMO_IMAGE), 0.0, OPEN_SET_TAGS, OPEN_SET_DESCRIPTIONS) == expected
    assert {t["label"] for t in expected} == {"go-kart", "horse racing"}
    with pytest.raises(DataError, match="not among the open-set tags"):
        service.tag(str(DEMO_IMAGE), 0.0, "go-kart", OPEN_SET_DESCRIPTIONS)
    with pytest.raises(DataError, match="without open-set tags"):
        service.tag(str(DEMO_IMAGE), None, " ", OPEN_SET_DESCRIPTIONS)
    with pytest.raises(DataError, match="line 1: expected 'tag: description'"):
        service.tag(str(DEMO_IMAGE), None, OPEN_SET_TAGS, "go-kart a car")


def test_zero_shot_tab_shows_the_pipelines_probabilities(page, reference, tmp_path):
    labels, template = LABELS, "a photo of a {}"
    expected = reference["zero_shot"](DEMO_IMAGE, candidate_labels=labels, hypothesis_template=template)[0]
    page.get_by_role("tab", name="Zero-shot classify").click()
    page.locator("#zs-labels textarea").fill(labels)
    page.locator("#zs-template textarea").fill(template)
    upload(page, "zs-image", DEMO_IMAGE)
    wait_message(page, "zs-message", f"best: {expected[0]['label']}")
    chart(page, "zs-chart", [(r["label"], r["score"]) for r in expected])
    screenshot(page, tmp_path, "app_zero_shot")


GALLERY_CAPTIONS = "() => Array.from(document.querySelectorAll('#search-gallery .caption-label'))" \
                   ".map(c => c.innerText.trim())"


def gallery_captions(page, expected):
    """The gallery's captions once they are ``expected`` (or after the time-out)."""
    wait_until(page, GALLERY_CAPTIONS, expected)
    return page.evaluate(GALLERY_CAPTIONS)


def expected_captions(index, vector, k):
    scores, rows = index.search(vector, k)
    return [f"{score:.3f} {Path(index.ids[row]).name}" for score, row in zip(scores[0].tolist(), rows[0].tolist())]


def test_search_tab_shows_the_indexs_neighbours(page, reference, store_index, tmp_path):
    index, features = store_index, reference["features"]
    page.get_by_role("tab", name="Search").click()
    query = "a red circle"
    page.locator("#search-query textarea").fill(query)
    page.locator("#search-run").click()
    expected = expected_captions(index, features(texts=[query]), 8)
    assert gallery_captions(page, expected) == expected
    assert wait_message(page, "search-message", "result(s)") == "8 result(s)"

    page.locator("#search-query textarea").fill("")
    upload(page, "search-image", DEMO_IMAGE)   # by image: the photo itself comes first
    expected = expected_captions(index, features(images=DEMO_IMAGE), 8)
    assert expected[0] == f"1.000 {DEMO_IMAGE.name}"
    assert gallery_captions(page, expected) == expected
    assert page.locator("#search-gallery img").count() == 8
    screenshot(page, tmp_path, "app_search")


def test_bad_inputs_show_a_message_and_the_server_keeps_serving(page, reference, tmp_path):
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("a text file, not a JPEG\n", encoding="utf-8")
    upload(page, "tag-image", not_an_image)
    assert "notes.jpg is not an image" in wait_message(page, "tag-message", "Error")

    page.get_by_role("tab", name="Zero-shot classify").click()
    page.locator("#zs-labels textarea").fill(" ")
    upload(page, "zs-image", DEMO_IMAGE)
    assert "no candidate labels" in wait_message(page, "zs-message", "Error")
    page.locator("#zs-labels textarea").fill("red circle, red circle")
    page.locator("#zs-run").click()
    assert "given more than once" in wait_message(page, "zs-message", "more than once")

    huge = tmp_path / "huge.png"
    Image.new("L", (8000, 6500), 128).save(huge)   # 52 megapixels, a small file
    page.get_by_role("tab", name="Search").click()
    upload(page, "search-image", huge)
    assert "8000x6500 = 52.0 megapixels" in wait_message(page, "search-message", "Error")

    # still serving: a good request after the bad ones
    expected = reference["zero_shot"](DEMO_IMAGE, candidate_labels=LABELS, hypothesis_template="a photo of a {}")[0]
    page.get_by_role("tab", name="Zero-shot classify").click()
    page.locator("#zs-labels textarea").fill(LABELS)
    page.locator("#zs-run").click()
    wait_message(page, "zs-message", f"best: {expected[0]['label']}")
    chart(page, "zs-chart", [(r["label"], r["score"]) for r in expected])


def test_page_says_where_the_demo_models_come_from(page):
    notice = page.inner_text("#notice")
    assert "trained, loaded from output/clip_demo_synthetic/final" in notice
    assert "trained, loaded from output/ram_demo_synthetic/final" in notice


def test_untrained_demo_says_so_and_what_to_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # no output/ here: the demo configs' models with random weights
    models = load_demo_models()
    assert models.trained == {"clip": None, "tagger": None}
    assert models.notice.count("untrained (random weights)") == 2
    for config in ("configs/clip/run_clip_demo_synthetic.yaml", "configs/ram/run_ram_demo_synthetic.yaml"):
        assert f"python run_mindformer.py --config {config} --run_mode train" in models.notice
    assert models.tagger.vocabulary().names[:3] == ["red", "green", "blue"]
    assert models.clip.config.projection_dim == 128
    assert not any(tmp_path.iterdir())   # nothing written


def test_store_of_the_export_script_is_searched_with_its_images(workdir, reference, tmp_path):
    from scripts.export_embeddings import main as export_embeddings   # pylint: disable=import-outside-toplevel
    clip = str(workdir / demo_output_dir(CLIP_DEMO))
    images = ROOT / "examples" / "images"
    export_embeddings(["--model", clip, "--images", str(images), "--out", str(tmp_path / "store"), "--num_workers", "0"])
    # the same CLIP weights as the export, already compiled
    service = AppService(clip=reference["features"].model, store=ImageStore(tmp_path / "store", image_root=images))
    rows = service.search(image=str(DEMO_IMAGE), k=5)
    assert [r["rank"] for r in rows] == [1, 2] and rows[0]["id"] == DEMO_IMAGE.name   # ids relative to --images
    assert rows[0]["path"] == DEMO_IMAGE and rows[0]["score"] == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(DataError, match="not both"):
        service.search(query="a train", image=str(DEMO_IMAGE))
    store = service.store
    store.index = RetrievalIndex(np.eye(2, 64, dtype=np.float32), ids=["a.png", "b.png"])   # another CLIP's
    with pytest.raises(ConfigError, match="holds 64-d vectors .* gives 128-d"):
        AppService(clip=reference["features"].model, store=store)
    with pytest.raises(ConfigError, match="needs a CLIP"):
        AppService(store=store)
