"""A self-contained HTML gallery: thumbnails (inline base64 JPEGs) with their captions.

One file, no scripts or links to fetch: it can be mailed or opened offline. Every piece of text
(captions, paths, error reasons) is HTML-escaped. Written as it goes, so a long list of records
never sits in memory.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Iterable
from pathlib import Path

from captioning.data.images import READ_ERRORS, describe_error, thumbnail

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; background: #fafafa; color: #222; }
h1 { font-size: 1.3rem; } p.note { color: #666; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 1rem; }
figure { margin: 0; background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .5rem; }
figure img { width: 100%; height: 200px; object-fit: contain; background: #eee; }
figcaption { font-size: .95rem; margin-top: .4rem; }
figcaption small { display: block; color: #888; font-size: .75rem; word-break: break-all; }
.missing { height: 200px; display: flex; align-items: center; justify-content: center; background: #eee; color: #a00; font-size: .8rem; }
table { border-collapse: collapse; font-size: .85rem; } td { border-top: 1px solid #ddd; padding: .2rem .6rem; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def thumbnail_data_uri(path: str | os.PathLike, size: int = 256) -> str:
    """The image at ``path`` as a ``data:image/jpeg;base64,...`` thumbnail."""
    buffer = io.BytesIO()
    thumbnail(path, size).save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(record: dict, size: int) -> str:
    label = f"<figcaption>{_e(record['caption'])}<small>{_e(record['image'])}</small></figcaption>"
    try:
        picture = (
            f'<img src="{thumbnail_data_uri(record["image"], size)}" alt="{_e(record["caption"])}" loading="lazy">'
        )
    except READ_ERRORS as error:  # moved or changed since it was captioned
        picture = f'<div class="missing">image unavailable: {_e(describe_error(error))}</div>'
    return f"<figure>{picture}{label}</figure>\n"


def write_gallery(
    records: Iterable[dict],
    path: str | os.PathLike,
    errors: Iterable[tuple[str, str]] = (),
    limit: int = 1000,
    thumb_size: int = 256,
    title: str = "Captions",
) -> Path:
    """Write the gallery of the first ``limit`` records (``{"image", "caption"}``) and the failures.

    Returns the path written. The page is written to a temporary name and moved into place, so
    an interrupted write never leaves a broken gallery behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    shown = more = 0
    with partial.open("w", encoding="utf-8") as out:
        out.write(f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>')
        out.write(
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style></head>\n'
        )
        out.write(f'<body><h1>{_e(title)}</h1>\n<div class="grid">\n')
        for record in records:
            if shown < limit:
                out.write(_figure(record, thumb_size))
                shown += 1
            else:
                more += 1
        out.write("</div>\n")
        if more:
            out.write(f'<p class="note">{more} more captioned images are not shown (gallery limit {limit}).</p>\n')
        failed = list(errors)
        if failed:
            out.write(f"<h2>{len(failed)} files could not be read</h2>\n<table>\n")
            out.writelines(f"<tr><td>{_e(image)}</td><td>{_e(reason)}</td></tr>\n" for image, reason in failed)
            out.write("</table>\n")
        out.write("</body></html>\n")
    os.replace(partial, path)
    return path
