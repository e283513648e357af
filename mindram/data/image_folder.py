"""Classification images arranged as ``root/<class>/**/<image>`` (torchvision ImageFolder layout)."""
import logging
import os
from pathlib import Path
from typing import Optional, Sequence, Union

from ..errors import ConfigError, DataError
from ..utils.image_files import leaves_folder, list_image_files
from .base import IMAGE_EXTENSIONS, RecordSource

logger = logging.getLogger(__name__)

__all__ = ["ImageFolder"]


class ImageFolder(RecordSource):
    """One sub-folder per class; label = index of the folder in sorted order.

    Args:
        root: the folder holding one sub-folder per class (files directly in ``root`` are ignored).
        class_names: display names in sorted-folder order; default: folder names with ``_`` -> space.
        caption_template: caption of every record, formatted with its class name.
        extensions: image file suffixes (case-insensitive) to include; sub-folders are searched recursively.
        follow_symlinks: also list symbolic links (class folders, files, folders) that lead out of ``root``; by
            default (False) the listing does not leave ``root``: such a link is skipped with a warning naming it
            (docs/limits.md#folders-and-symbolic-links).
    """

    def __init__(self, root: Union[str, os.PathLike], class_names: Optional[Sequence[str]] = None,
                 caption_template: str = "a photo of a {}.", extensions: Sequence[str] = IMAGE_EXTENSIONS,
                 follow_symlinks: bool = False):
        super().__init__()
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"image folder {self.root} does not exist (expected {self.root}/<class>/<image>)")
        folders = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
                         and (follow_symlinks or not self._leaves_root(p)))
        if not folders:
            raise DataError(f"image folder {self.root} has no class sub-folders (expected one folder of images per "
                            f"class: {self.root}/<class>/<image>)")
        if class_names is None:
            class_names = [f.replace("_", " ") for f in folders]
        elif len(class_names) != len(folders):
            raise ConfigError(f"{len(class_names)} class_names given for {len(folders)} class folders in "
                              f"{self.root}: {folders}")
        self.folders = folders
        self.class_names = list(class_names)
        self.caption_template = caption_template
        exts = tuple(e.lower() for e in extensions)
        for label, folder in enumerate(folders):
            files = list_image_files(self.root / folder, exts, within=self.root, follow_symlinks=follow_symlinks)
            if not files:
                logger.warning("class folder %s has no image files", self.root / folder)
            caption = caption_template.format(self.class_names[label])
            self._items.extend((str(p), caption, label) for p in files)
        if not self._items:
            raise DataError(f"image folder {self.root}: no files with suffix in {list(exts)} in its class folders "
                            f"{folders[:5]}{' ...' if len(folders) > 5 else ''}")
        logger.info("image folder %s: %d images, %d classes", self.root, len(self), len(folders))

    def _leaves_root(self, folder: Path) -> bool:
        target = leaves_folder(folder, os.path.realpath(self.root)) if folder.is_symlink() else None
        if target is not None:
            logger.warning("skipping %s: a symbolic link to %s, outside the folder %s", folder, target, self.root)
        return target is not None
