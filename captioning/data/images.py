"""Reading images the way users download them: any format Pillow knows, any mode, EXIF-rotated.

Also the image-folder data set of ``captioning caption``: a list of files read in DataLoader
workers, where a file that cannot be read becomes an error record instead of an exception, so
one bad file never takes a batch (or a night-long run) down with it.
"""

from __future__ import annotations

import glob
import io
import os
import stat
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset, default_collate

ImageSource = str | os.PathLike | bytes

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
"""File name endings ``list_images`` picks up in a folder or glob (case-insensitive)."""

DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # Pillow's own default, about 89 megapixels
"""Images with more pixels are refused as decompression bombs (a 12k x 7.5k photo still passes)."""

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
# Errors that mean "this file is not a readable image" (as opposed to a bug in this code).
READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


# --- one image ------------------------------------------------------------------------------


@contextmanager
def pixel_limit(max_pixels: int | None) -> Iterator[None]:
    """Set Pillow's decompression-bomb limit (a process-wide global) for a block, then restore it.

    ``load_rgb`` checks its own ``max_pixels`` exactly; this only keeps Pillow's internal checks
    (which raise at twice the global, e.g. on GIF frames) from refusing images the caller allowed.
    """
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _check_pixels(size: tuple[int, int], max_pixels: int | None) -> None:
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise Image.DecompressionBombError(
            f"{width}x{height} = {width * height} pixels is over the limit of {max_pixels} "
            "(a possible decompression bomb; raise --max-pixels to read it)"
        )


def _high_bit_depth_to_l(image: Image.Image) -> Image.Image:
    """16/32-bit integer and float grey (I;16*, I, F) -> 8-bit L.

    Pillow's own ``convert`` clips such values at 255 (a 16-bit scan turns white). The scale is
    taken from the data type where it says it (I;16: 0-65535) and from the values otherwise
    (I and F hold 8-bit, 16-bit or 0-1 data depending on the writer).
    """
    pixels = np.asarray(image).astype(np.float64)
    peak = float(pixels.max(initial=0))
    if image.mode.startswith("I;16") or 255 < peak <= 65535:
        scale = 255 / 65535
    elif image.mode == "F" and peak <= 1:
        scale = 255.0
    elif peak <= 255:
        scale = 1.0
    else:
        scale = 255 / peak
    return Image.fromarray(np.clip(np.rint(pixels * scale), 0, 255).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB. Transparent pixels become white (as viewers show them on a page)."""
    if image.mode == "RGB":
        return image
    if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("LA").convert("RGBA") if image.mode == "La" else image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode.startswith("I") or image.mode == "F":
        return _high_bit_depth_to_l(image).convert("RGB")
    return image.convert("RGB")  # 1, L, P, CMYK, YCbCr, LAB, HSV


def load_rgb(
    source: ImageSource, target_size: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Open an image file (or its bytes) as an upright RGB picture.

    Args:
        source: A path, or the encoded bytes of the file.
        target_size: The side the picture will be resized to. JPEGs are then decoded at a reduced
            scale (libjpeg's DCT scaling, via ``Image.draft``) when that is still at least this
            big: several times faster for photos from a camera.
        max_pixels: Refuse images with more pixels than this (checked on the header, before
            anything is decoded); None for no limit.

    Raises:
        OSError / ValueError / Image.DecompressionBombError from Pillow for unreadable files
        (see ``READ_ERRORS``); callers decide whether to skip or stop.
    """
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        _check_pixels(image.size, max_pixels)
        if target_size is not None and image.format == "JPEG":
            image.draft("RGB", (target_size, target_size))
        image.load()  # decode now: a truncated file fails here, inside the `with`
        return to_rgb(ImageOps.exif_transpose(image))


def describe_error(error: BaseException) -> str:
    """A one-line reason for the errors file: the exception type and its message."""
    if isinstance(error, UnidentifiedImageError):  # its message names a BytesIO, not the file
        return "UnidentifiedImageError: not an image file Pillow can read"
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


# --- listing inputs ---------------------------------------------------------------------------


def _is_folder(entry: os.DirEntry) -> bool:
    """A symlink loop or a dangling link is not a folder: it stays, to be reported when read."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def list_images(source: str | os.PathLike, recursive: bool = False) -> list[str]:
    """The image files named by ``source``, sorted, each once.

    ``source`` is one of:

    - a folder: its files with an image extension (``IMAGE_EXTENSIONS``), in subfolders too
      with ``recursive``;
    - a ``.txt`` file: one path per line (relative ones are relative to the list's folder;
      blank lines and lines starting with ``#`` are skipped), taken whatever their extension;
    - a glob pattern (``photos/*.jpg``; ``photos/**/*.jpg`` spans folders, ``photos`` included).

    Entries that are not readable regular files (broken links, fifos, unreadable files) are
    kept: reading them fails later with a reason, so they are reported instead of vanishing.
    """
    text = os.fspath(source)
    if os.path.isdir(text):
        if recursive:
            paths = [os.path.join(root, name) for root, _, names in os.walk(text) for name in names]
        else:
            paths = [entry.path for entry in os.scandir(text) if not _is_folder(entry)]
        return sorted({p for p in paths if _is_image_name(p)})
    if text.lower().endswith(".txt") and os.path.isfile(text):
        base = os.path.dirname(text)
        with open(text, encoding="utf-8") as lines:
            names = [line.strip() for line in lines]
        paths = [
            name if os.path.isabs(name) else os.path.join(base, name)
            for name in names
            if name and not name.startswith("#")
        ]
        return list(dict.fromkeys(paths))  # keep the list's order, drop repeats
    if glob.has_magic(text):
        matches = glob.glob(text, recursive=True)  # whoever writes ** means any depth
        by_file: dict[str, str] = {}  # a link to a folder above repeats files: keep each once, by its shortest path
        for path in sorted(matches, key=lambda p: (p.count(os.sep), p)):
            if not os.path.isdir(path) and _is_image_name(path):
                by_file.setdefault(os.path.realpath(path), path)
        return sorted(by_file.values())
    if os.path.lexists(text):
        return [text]  # a single file
    raise FileNotFoundError(f"--input {text} is not a folder, a .txt list of paths, a glob pattern or a file")


# --- the data set of `captioning caption` -----------------------------------------------------


def _open_regular(path: str) -> bytes:
    """The bytes of a regular file; a fifo or device would block or never end, so it is refused."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"not a regular file ({stat.filemode(mode)})")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read()
    finally:
        os.close(fd)
    if not data:
        raise OSError("empty file (0 bytes)")
    return data


class ImageFolder(Dataset):
    """Image files as normalised tensors, with unreadable files reported instead of raised.

    Items are dicts ``{"path", "image": (3, H, W) tensor or None, "error": str or None}``;
    ``collate_images`` separates the good from the bad.

    Args:
        paths: Files to read, in order.
        transform: PIL image -> tensor (``captioning.models.encoder.build_transform``).
        target_size: Side the transform resizes to (for reduced-size JPEG decoding).
        max_pixels: Decompression-bomb limit, see ``load_rgb``.
    """

    def __init__(
        self,
        paths: Sequence[str],
        transform: Callable[[Image.Image], Tensor],
        target_size: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.paths = paths
        self.transform = transform
        self.target_size = target_size
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        try:
            image = self.transform(load_rgb(_open_regular(path), self.target_size, self.max_pixels))
            return {"path": path, "image": image, "error": None}
        except READ_ERRORS as error:
            return {"path": path, "image": None, "error": describe_error(error)}

    def worker_init(self, worker_id: int) -> None:
        """DataLoader ``worker_init_fn``: Pillow's limit follows ``max_pixels`` in this worker only."""
        Image.MAX_IMAGE_PIXELS = self.max_pixels
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # load_rgb raises instead


def collate_images(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the readable images; keep the unreadable ones aside with their reasons.

    Returns ``{"images": (B, 3, H, W) or None, "paths": [B], "errors": [(path, reason), ...]}``
    where B counts readable images only.
    """
    good = [item for item in items if item["error"] is None]
    return {
        # default_collate stacks straight into shared memory inside a worker: no extra copy
        "images": default_collate([item["image"] for item in good]) if good else None,  # (B, 3, H, W)
        "paths": [item["path"] for item in good],
        "errors": [(item["path"], item["error"]) for item in items if item["error"] is not None],
    }


def thumbnail(path: str | os.PathLike, size: int = 256, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An upright RGB thumbnail fitting in ``size`` x ``size`` (for the HTML gallery)."""
    image = load_rgb(_open_regular(os.fspath(path)), target_size=size, max_pixels=max_pixels)
    image.thumbnail((size, size))
    return image
