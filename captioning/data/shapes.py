"""Shapes: a deterministic synthetic captioned-image data set, the embedded default.

Each image holds 1-3 coloured shapes of two sizes on a 3x3 layout; each caption says what is
there and where, in several paraphrases. The files are written in the Hugging Face imagefolder
layout (``split/NNNNN.png`` + ``split/metadata.jsonl``), so training on shapes runs the very code
path a user's own data takes. The ``novel`` split holds colour-shape pairs that never occur in the
other splits: a model that learned colour and shape separately can still describe them.

Every image is drawn from its own ``random.Random((seed, split, index))``, so the same seed gives
byte-identical files, in any order and in parallel.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw
from tqdm import tqdm

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 190),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = ("small", "large")
# (row, column) of the 3x3 layout -> how a caption names the place.
PLACES = {
    (0, 0): "top left", (0, 1): "top", (0, 2): "top right",
    (1, 0): "left", (1, 1): "center", (1, 2): "right",
    (2, 0): "bottom left", (2, 1): "bottom", (2, 2): "bottom right",
}  # fmt: skip
# Colour-shape pairs kept out of train/validation/test; the novel split is made of them.
HELD_OUT = frozenset({("red", "triangle"), ("green", "circle"), ("blue", "diamond"), ("yellow", "square")})
DEFAULT_SIZES = {"train": 8000, "validation": 1000, "test": 1000, "novel": 1000}
_SUPERSAMPLE = 2  # draw at twice the size and downsample: anti-aliased edges, still deterministic


@dataclass(frozen=True)
class ShapeObject:
    color: str
    shape: str
    size: str
    cell: tuple[int, int]

    def phrase(self) -> str:
        return f"a {self.size} {self.color} {self.shape}"


def _place_phrase(cell: tuple[int, int]) -> str:
    place = PLACES[cell]
    if place == "center":
        return "in the center"
    if place in ("top", "bottom"):
        return f"at the {place}"
    if place in ("left", "right"):
        return f"on the {place}"
    return f"in the {place}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def captions_for(objects: list[ShapeObject]) -> list[str]:
    """Four paraphrases naming every object with its place, in reading order."""
    objects = sorted(objects, key=lambda o: o.cell)
    located = [f"{o.phrase()} {_place_phrase(o.cell)}" for o in objects]
    count = {1: "one shape", 2: "two shapes", 3: "three shapes"}[len(objects)]
    return [
        _join(located),
        f"there is {_join(located)}" if len(objects) == 1 else f"there are {_join(located)}",
        f"a picture of {_join(located)}",
        f"{count} : " + _join([f"{o.phrase()} {PLACES[o.cell]}" for o in objects]),
    ]


def sample_objects(rng: random.Random, split: str) -> list[ShapeObject]:
    """1-3 objects in distinct cells; on ``novel`` the first is a held-out pair, elsewhere none is."""
    count = rng.randint(1, 3)
    cells = rng.sample(sorted(PLACES), count)
    objects = []
    for i, cell in enumerate(cells):
        must_be_novel = split == "novel" and i == 0
        color, shape = rng.choice(sorted(COLORS)), rng.choice(SHAPES)
        while ((color, shape) in HELD_OUT) != must_be_novel:
            color, shape = rng.choice(sorted(COLORS)), rng.choice(SHAPES)
        objects.append(ShapeObject(color, shape, rng.choice(SIZES), cell))
    return objects


def draw(objects: list[ShapeObject], rng: random.Random, image_size: int) -> Image.Image:
    """Render the objects on a plain grey background, with jitter in place, size and tint."""
    canvas = image_size * _SUPERSAMPLE
    grey = rng.randint(40, 110)
    image = Image.new("RGB", (canvas, canvas), (grey, grey, grey))
    pen = ImageDraw.Draw(image)
    cell = canvas / 3
    for obj in objects:
        radius = cell * (0.40 if obj.size == "large" else 0.22) * rng.uniform(0.9, 1.05)
        cx = (obj.cell[1] + 0.5) * cell + rng.uniform(-0.08, 0.08) * cell
        cy = (obj.cell[0] + 0.5) * cell + rng.uniform(-0.08, 0.08) * cell
        fill = tuple(max(0, min(255, c + rng.randint(-15, 15))) for c in COLORS[obj.color])
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        if obj.shape == "circle":
            pen.ellipse(box, fill=fill)
        elif obj.shape == "square":
            side = radius * 0.85
            pen.rectangle((cx - side, cy - side, cx + side, cy + side), fill=fill)
        elif obj.shape == "triangle":
            pen.polygon(
                [(cx, cy - radius), (cx + radius, cy + radius * 0.8), (cx - radius, cy + radius * 0.8)], fill=fill
            )
        else:  # diamond
            pen.polygon([(cx, cy - radius), (cx + radius, cy), (cx, cy + radius), (cx - radius, cy)], fill=fill)
    return image.resize((image_size, image_size), Image.Resampling.LANCZOS)


def make_example(seed: int, split: str, index: int, image_size: int) -> tuple[Image.Image, list[str]]:
    rng = random.Random(f"{seed}/{split}/{index}")
    objects = sample_objects(rng, split)
    return draw(objects, rng, image_size), captions_for(objects)


MARKER = "shapes.json"
"""Written at the top of every generated data set: only a folder holding it is ever replaced."""


def _check_replaceable(root: Path) -> None:
    """Refuse an ``--out`` that is not empty and not a data set this command made: it is about to
    be replaced, and an imagefolder of the user's own photos has the very same layout."""
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"--out {root} is a file: choose a folder")
    if root.is_dir() and any(root.iterdir()) and not (root / MARKER).is_file():
        raise FileExistsError(
            f"--out {root} is not empty and was not made by `captioning make-shapes` (no {MARKER}): it would be "
            "replaced, so choose a new or empty folder, e.g. --out data/shapes"
        )


def make_shapes(
    out: str = "data/shapes",
    seed: int = 0,
    train: int = DEFAULT_SIZES["train"],
    validation: int = DEFAULT_SIZES["validation"],
    test: int = DEFAULT_SIZES["test"],
    novel: int = DEFAULT_SIZES["novel"],
    image_size: int = 128,
) -> Path:
    """Generate the shapes data set in the imagefolder layout.

    Args:
        out: Folder to write ``train/ validation/ test/ novel/`` into. A data set made by this
            command is replaced; any other non-empty folder is refused, never deleted.
        seed: The same seed gives byte-identical files.
        train: Number of training images.
        validation: Number of validation images.
        test: Number of test images.
        novel: Number of images whose colour-shape pairs never occur in the other splits.
        image_size: Side of the square PNG images, in pixels.
    """
    sizes = {"train": train, "validation": validation, "test": test, "novel": novel}
    for split, n in sizes.items():
        if n < 0:
            raise ValueError(f"--{split} must be >= 0, got {n}")
    root = Path(out)
    _check_replaceable(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".partial", dir=root.parent))
    with tqdm(total=sum(sizes.values()), desc="shapes", unit="img") as progress:
        for split, n in sizes.items():
            folder = staging / split
            folder.mkdir(parents=True)
            lines = []
            for index in range(n):
                image, captions = make_example(seed, split, index, image_size)
                name = f"{index:05d}.png"
                image.save(folder / name, optimize=False)
                lines.append(json.dumps({"file_name": name, "captions": captions}))
                progress.update()
            (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    marker = {"made_by": "captioning make-shapes", "seed": seed, "sizes": sizes, "image_size": image_size}
    (staging / MARKER).write_text(json.dumps(marker) + "\n")
    # Swap in the finished data set at once: an interrupted run never leaves a half-made one behind.
    shutil.rmtree(root, ignore_errors=True)
    os.replace(staging, root)
    return root
