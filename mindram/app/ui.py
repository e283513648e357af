"""The page: three Gradio tabs around :class:`~mindram.app.service.AppService`.

Each tab shows its results (tags, a bar chart of scores, a table; a gallery for search) and a message line.
A bad input (an unreadable or oversized image, an empty label list, a bad option) clears the results and shows
the one-line reason in the message line; an unexpected failure is logged with its traceback and reported the
same way, so the server keeps serving.
"""
import logging
import re
from pathlib import Path

import gradio as gr
from PIL import Image

from ..errors import MindramError
from ..utils.image_files import check_pixel_budget, open_regular_file
from .service import DEFAULT_TEMPLATE

logger = logging.getLogger(__name__)

USER_ERRORS = (MindramError, ValueError, OSError)   # bad input; anything else is a bug (logged with its traceback)
THUMBNAIL = (256, 256)
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]      # no web fonts: the page fetches nothing outside
MONO_FONTS = ["ui-monospace", "monospace"]


class ImageUpload(gr.Image):
    """A ``gr.Image`` that hands every upload to the app as a file path, readable or not.

    ``gr.Image`` opens the upload with PIL before the app sees it, so a text file renamed ``.jpg`` would fail
    inside Gradio with a bare "Error"; here it reaches :func:`~mindram.app.service.check_image`, which says
    what is wrong. Drawn by Gradio's own image widget (``is_template``).
    """

    is_template = True

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except Exception:  # pylint: disable=broad-except  # PIL's errors, whatever they are: the app names them
            if payload is not None and getattr(payload, "path", None):
                return payload.path
            raise


def image_upload(label, elem_id):
    """An :class:`ImageUpload` (upload or paste) that gives the app the file as it was uploaded."""
    return ImageUpload(type="filepath", image_mode=None, sources=["upload", "clipboard"], label=label,
                       elem_id=elem_id)


def message(text, error=False):
    """A message line: ``text`` (which may hold file names and labels the user typed) shown literally."""
    text = re.sub(r"([\\`*_{}\[\]()<>#+!|~-])", r"\\\1", text)
    return f"**Error:** {text}" if error else text


def guarded(outputs_on_error):
    """Run a handler; on failure return ``outputs_on_error`` with the message in front (its first output)."""
    def wrap(function):
        def run(*args):
            try:
                return function(*args)
            except USER_ERRORS as e:
                text = " ".join(str(e).split()) or type(e).__name__
                logger.info("%s: rejected input: %s", function.__name__, text)
            except Exception as e:  # pylint: disable=broad-except  # a bug must not take the page down
                logger.exception("%s failed", function.__name__)
                text = f"internal error ({type(e).__name__}: {e}); see the server log"
            return (message(text, error=True), *outputs_on_error)
        run.__name__ = function.__name__
        return run
    return wrap


def tag_label(tag):
    """The chart's label of a tag: English, and the Chinese name when it differs."""
    return tag["label"] if tag["label_cn"] == tag["label"] else f"{tag['label']} / {tag['label_cn']}"


def thumbnail(path):
    """A small RGB copy of a store image: a regular file (a FIFO does not block the page), within the pixel budget
    once JPEG's draft mode has shrunk it."""
    with open_regular_file(path) as f, Image.open(f) as image:
        image.draft("RGB", THUMBNAIL)
        check_pixel_budget(image.width, image.height, Path(path).name)
        image = image.convert("RGB")
        image.thumbnail(THUMBNAIL)
        return image


def build_ui(service):
    """The ``gr.Blocks`` of the app on ``service``."""
    with gr.Blocks(title="mindram", analytics_enabled=False) as blocks:
        gr.Markdown("# mindram: image tagging, zero-shot classification and search on MindSpore")
        if service.notice:
            gr.Markdown(service.notice, elem_id="notice")
        _tag_tab(service)
        _zero_shot_tab(service)
        _search_tab(service)
    return blocks


def _tag_tab(service):
    with gr.Tab("Tag an image", id="tag"):
        with gr.Row():
            with gr.Column():
                image = image_upload("Image (upload or paste)", "tag-image")
                per_tag = gr.Checkbox(True, label="Per-tag thresholds (the model's calibrated ones)",
                                      elem_id="tag-per-tag")
                threshold = gr.Slider(0.0, 1.0, value=0.68, step=0.01, label="Threshold for every tag "
                                      "(when per-tag thresholds are off)", elem_id="tag-threshold")
                open_set = gr.Textbox(label="Open-set tags (optional, comma-separated)", elem_id="tag-open-set",
                                      placeholder="go-kart, horse racing")
                descriptions = gr.Textbox(label="Open-set descriptions (optional, RAM++): one 'tag: description' "
                                          "per line, the same number per tag", lines=3, elem_id="tag-descriptions")
                run = gr.Button("Tag", variant="primary", elem_id="tag-run")
            with gr.Column():
                status = gr.Markdown(elem_id="tag-message")
                english = gr.Textbox(label="Tags", elem_id="tag-english", interactive=False)
                chinese = gr.Textbox(label="Tags (Chinese)", elem_id="tag-chinese", interactive=False)
                chart = gr.Label(label="Scores", elem_id="tag-chart")
                table = gr.Dataframe(headers=["tag", "中文", "score"], label="Scores", elem_id="tag-table",
                                     interactive=False)

        @guarded(("", "", None, None))
        def tag(image_path, use_per_tag, value, tags, descriptions_text):
            result = service.tag(image_path, None if use_per_tag else value, tags, descriptions_text)
            status_text = f"{len(result)} tag(s)" if result else "no tag passes the threshold"
            return (message(status_text), " | ".join(t["label"] for t in result),
                    " | ".join(t["label_cn"] for t in result), {tag_label(t): t["score"] for t in result},
                    [[t["label"], t["label_cn"], round(t["score"], 4)] for t in result])

        gr.on([run.click, image.upload], tag, [image, per_tag, threshold, open_set, descriptions],
              [status, english, chinese, chart, table])


def _zero_shot_tab(service):
    with gr.Tab("Zero-shot classify", id="zero-shot"):
        with gr.Row():
            with gr.Column():
                image = image_upload("Image (upload or paste)", "zs-image")
                labels = gr.Textbox(service.default_labels, label="Candidate labels (comma-separated)",
                                    elem_id="zs-labels")
                template = gr.Textbox(DEFAULT_TEMPLATE, label="Template ({} is replaced by each label)",
                                      elem_id="zs-template")
                run = gr.Button("Classify", variant="primary", elem_id="zs-run")
            with gr.Column():
                status = gr.Markdown(elem_id="zs-message")
                chart = gr.Label(label="Probabilities", elem_id="zs-chart")
                table = gr.Dataframe(headers=["rank", "label", "probability"], label="Probabilities",
                                     elem_id="zs-table", interactive=False)

        @guarded((None, None))
        def classify(image_path, labels_text, template_text):
            result = service.classify(image_path, labels_text, template_text)
            return (message(f"best: {result[0]['label']} ({100 * result[0]['score']:.1f}%)"),
                    {r["label"]: r["score"] for r in result},
                    [[rank, r["label"], round(r["score"], 4)] for rank, r in enumerate(result, 1)])

        gr.on([run.click, image.upload], classify, [image, labels, template], [status, chart, table])


def _search_tab(service):
    with gr.Tab("Search", id="search"):
        size = f"{len(service.store)} images" if service.store is not None else "no store loaded"
        gr.Markdown(f"Nearest images of the embedding store ({size}) to a text or an image, by CLIP cosine "
                    f"similarity.")
        with gr.Row():
            with gr.Column():
                query = gr.Textbox(label="Text query", elem_id="search-query", placeholder="a red circle")
                image = image_upload("…or an image (upload or paste)", "search-image")
                k = gr.Slider(1, 32, value=8, step=1, label="How many", elem_id="search-k")
                run = gr.Button("Search", variant="primary", elem_id="search-run")
            with gr.Column():
                status = gr.Markdown(elem_id="search-message")
                gallery = gr.Gallery(label="Results", columns=3, elem_id="search-gallery", object_fit="contain",
                                     interactive=False)
                table = gr.Dataframe(headers=["rank", "id", "score"], label="Results", elem_id="search-table",
                                     interactive=False, column_widths=["12%", "70%", "18%"], wrap=True)

        @guarded((None, None))
        def search(text, image_path, count):
            rows = service.search(text, image_path, int(count))
            shown = [(thumbnail(r["path"]), f"{r['score']:.3f} {Path(r['id']).name}") for r in rows if r["path"]]
            missing = len(rows) - len(shown)
            note = f"; {missing} image file(s) not found (see --image_root)" if missing else ""
            return (message(f"{len(rows)} result(s){note}"), shown,
                    [[r["rank"], r["id"], round(r["score"], 4)] for r in rows])

        gr.on([run.click, image.upload], search, [query, image, k], [status, gallery, table])


def launch(blocks, host="127.0.0.1", port=7860, share=False, max_file_size="100mb"):
    """Serve ``blocks`` (blocking): on ``host:port``, with a public Gradio link only when ``share``."""
    theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS)
    blocks.queue(default_concurrency_limit=1)
    blocks.launch(server_name=host, server_port=port, share=share, theme=theme, max_file_size=max_file_size,
                  ssr_mode=False, mcp_server=False, footer_links=[], show_error=True)
