"""Tag-list files (one tag per line): the one reader used by the models, the datasets and the metrics."""
from pathlib import Path


def read_tag_list(path, skip_blank=False):
    """The lines of a tag-list file, unstripped, as recognize-anything reads them (``read().splitlines()``:
    2579 of RAM's Chinese names end in a space and keep it). ``skip_blank`` leaves out empty and
    whitespace-only lines (the evaluation sets' lists, where a line number is not a tag index). A missing file
    raises ``FileNotFoundError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tag list not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()] if skip_blank else lines
