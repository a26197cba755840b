"""CaptionDataModule: captioned images from the formats people have, through Hugging Face ``datasets``.

Formats (``format: auto`` picks by what ``root`` holds):

- ``imagefolder``: ``root/{train,validation,test,...}/`` images + ``metadata.jsonl`` lines
  ``{"file_name": ..., "captions": [...]}``, read by ``datasets.load_dataset("imagefolder")``.
  The shapes data set is written this way, so the default is the user's path.
- ``karpathy``: ``dataset_flickr8k.json`` / ``dataset_coco.json`` (the research splits) and an
  image root (``restval`` counts as training, ``val`` as validation).
- ``flickr8k``: the ``captions.txt`` CSV (``image,caption``) most people download, or the original
  ``Flickr8k.token.txt`` (``name.jpg#0<TAB>caption``), with ``Images/``. The official
  ``Flickr_8k.{train,dev,test}Images.txt`` lists decide the split when present; otherwise a hash
  of the file name does (75 / 12.5 / 12.5 %, stable as images are added).

Training iterates over every (image, caption) pair; evaluation over each image once, with all
of its references. With a frozen encoder the batches carry cached features instead of pixels.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import defaultdict
from pathlib import Path

import datasets
import lightning as L
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from captioning.data.features import ImageFiles, load_or_compute
from captioning.data.images import ImageSource
from captioning.vocab import Vocabulary, tokenize

FORMATS = ("auto", "imagefolder", "karpathy", "flickr8k")
_KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "validation", "test": "test"}


_FLICKR8K_CAPTIONS = ("captions.txt", "Flickr8k.token.txt")


def detect_format(root: Path) -> str:
    make = f"`captioning make-shapes --out {root}` makes the default data there"
    if not root.is_dir():
        raise FileNotFoundError(f"data.root {root} does not exist: point --data.root at your data set, or {make}")
    if any((root / name).is_file() for name in _FLICKR8K_CAPTIONS):
        return "flickr8k"
    if any(root.glob("dataset_*.json")):
        return "karpathy"
    if any(root.glob("*/metadata.jsonl")):
        return "imagefolder"
    raise FileNotFoundError(
        f"{root} holds no captioned images: expected */metadata.jsonl (imagefolder), dataset_*.json "
        f"(Karpathy splits) or captions.txt / Flickr8k.token.txt (Flickr8k); or {make}"
    )


def _table(images: list[str], captions: list[list[str]]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"image": images, "captions": captions}).cast_column(
        "image", datasets.Image(decode=False)
    )


def _load_karpathy(root: Path, image_root: Path, split: str) -> datasets.Dataset:
    found = sorted(root.glob("dataset_*.json"))
    if len(found) > 1:
        raise ValueError(
            f"{root} holds several Karpathy split files ({', '.join(f.name for f in found)}): keep one per data.root"
        )
    annotations = found[0]
    images, captions = [], []
    try:
        for entry in json.loads(annotations.read_text(encoding="utf-8"))["images"]:
            if _KARPATHY_SPLITS.get(entry["split"]) == split:
                images.append(str(image_root / entry.get("filepath", "") / entry["filename"]))
                captions.append([sentence["raw"] for sentence in entry["sentences"]])
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(
            f"{annotations} is not a Karpathy split file ({type(error).__name__}: {error}): expected "
            '{"images": [{"filename", "split", "sentences": [{"raw"}]}]}'
        ) from error
    return _table(images, captions)


def _flickr8k_split(name: str, official: dict[str, str]) -> str:
    if official:
        return official.get(name, "unused")
    bucket = hashlib.sha1(name.encode()).digest()[0] % 8
    return "train" if bucket < 6 else ("validation" if bucket == 6 else "test")


def _flickr8k_captions(path: Path) -> dict[str, list[str]]:
    """Captions by image name, from the CSV with an ``image,caption`` header or the tab-separated token file."""
    by_image: dict[str, list[str]] = defaultdict(list)
    with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheet exports start with a BOM
        rows = csv.reader(f)
        header = [column.strip().lower() for column in next(rows, [])]
        if header[:2] == ["image", "caption"]:
            for number, row in enumerate(rows, 2):
                if len(row) < 2 or not row[0].strip() or not row[1].strip():
                    raise ValueError(
                        f"line {number} of {path} needs an image name and a caption: {','.join(row)[:80]!r}"
                    )
                by_image[row[0].strip()].append(row[1].strip())
            return by_image
        f.seek(0)
        for number, line in enumerate(f, 1):
            name, tab, caption = line.lstrip("\ufeff").rstrip("\r\n").partition("\t")
            if not line.strip():
                continue
            if not tab or not caption.strip():
                raise ValueError(
                    f"line {number} of {path} is neither CSV with an 'image,caption' header nor "
                    f"'name.jpg#0<TAB>caption': {line.strip()[:80]!r}"
                )
            by_image[name.rsplit("#", 1)[0]].append(caption.strip())
    return by_image


def _load_flickr8k(root: Path, image_root: Path, split: str) -> datasets.Dataset:
    official = {}
    for list_split, file_name in (("train", "trainImages"), ("validation", "devImages"), ("test", "testImages")):
        listing = root / f"Flickr_8k.{file_name}.txt"
        if listing.is_file():
            official.update(dict.fromkeys(listing.read_text().split(), list_split))
    by_image = _flickr8k_captions(next(root / n for n in _FLICKR8K_CAPTIONS if (root / n).is_file()))
    names = sorted(n for n in by_image if _flickr8k_split(n, official) == split)
    return _table([str(image_root / n) for n in names], [by_image[n] for n in names])


def load_split(root: str | Path, split: str, format: str = "auto", image_root: str | None = None) -> datasets.Dataset:
    """One split as a ``datasets.Dataset`` with ``image`` (undecoded: path or bytes) and ``captions``."""
    root = Path(root)
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if format == "auto":
        format = detect_format(root)
    if format == "imagefolder":
        folder = root / split
        if not (folder / "metadata.jsonl").is_file():
            found = sorted(p.parent.name for p in root.glob("*/metadata.jsonl"))
            hint = "; rename val/ to validation/" if split == "validation" and "val" in found else ""
            raise FileNotFoundError(
                f"{folder / 'metadata.jsonl'} not found: each split of an imagefolder data set needs one "
                f"(splits found: {', '.join(found) or 'none'}{hint})"
            )
        check_metadata(folder / "metadata.jsonl")
        table = datasets.load_dataset("imagefolder", data_files={split: [str(folder / "**")]}, split=split)
        table = table.cast_column("image", datasets.Image(decode=False))
    else:
        images = Path(image_root) if image_root else root / ("Images" if format == "flickr8k" else "images")
        table = (_load_karpathy if format == "karpathy" else _load_flickr8k)(root, images, split)
    if "captions" not in table.column_names:
        raise ValueError(f"split {split!r} of {root} has no 'captions' column (columns: {table.column_names})")
    if len(table) == 0:
        known = "" if format == "imagefolder" else f" ({format} data sets have the splits train, validation, test)"
        raise ValueError(f"split {split!r} of {root} is empty{known}")
    return table


def check_metadata(path: Path) -> None:
    """Fail on the first malformed line of an imagefolder ``metadata.jsonl``, naming it and the fix.

    ``datasets`` would report a JSON error without the file, read a missing ``captions`` as null,
    and a string as a caption per character.
    """
    expected = 'expected {"file_name": "a.jpg", "captions": ["a caption", "another"]}'
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"line {number} of {path} is not JSON ({error}): {expected}") from error
            if not _is_metadata_row(row):
                raise ValueError(f"line {number} of {path} is {line.strip()[:100]}: {expected}")


def _is_metadata_row(row: object) -> bool:
    if not isinstance(row, dict) or not isinstance(row.get("file_name"), str):
        return False
    captions = row.get("captions")
    return isinstance(captions, list) and bool(captions) and all(isinstance(c, str) for c in captions)


def table_sources(table: datasets.Dataset) -> list[ImageSource]:
    """The image of every row: a file path, or the bytes of an image stored in the data set."""
    return [item["bytes"] if item.get("bytes") else item["path"] for item in table["image"]]


def check_images_exist(sources: list[ImageSource], split: str, fix: str) -> None:
    """Fail before any work when image files are missing, with how many, an example and ``fix``.

    Otherwise a wrong image root surfaces deep inside feature caching or a DataLoader worker.
    """
    missing = [source for source in sources if isinstance(source, str) and not os.path.isfile(source)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of the {len(sources)} images of split {split!r} are missing, e.g. {missing[0]}: {fix}"
        )


class CaptionPairs(Dataset):
    """Training items: one per (image, caption) pair."""

    def __init__(self, inputs: Dataset | Tensor, captions: list[list[list[int]]]) -> None:
        self.inputs = inputs
        self.pairs = [(i, j) for i, caps in enumerate(captions) for j in range(len(caps))]
        self.captions = captions

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        image, caption = self.pairs[index]
        return {"inputs": self.inputs[image], "tokens": torch.tensor(self.captions[image][caption]), "index": image}


class CaptionedImages(Dataset):
    """Evaluation items: one per image, with every reference caption, tokenised (``references``, for
    nltk BLEU) and as written (``reference_texts``, for the coco-caption metrics, which tokenise their own way)."""

    def __init__(
        self,
        inputs: Dataset | Tensor,
        captions: list[list[list[int]]],
        references: list[list[list[str]]],
        texts: list[list[str]],
    ) -> None:
        self.inputs, self.captions, self.references, self.texts = inputs, captions, references, texts

    def __len__(self) -> int:
        return len(self.references)

    def __getitem__(self, index: int) -> dict:
        tokens = torch.tensor(self.captions[index][0])
        item = {"inputs": self.inputs[index], "tokens": tokens, "index": index, "references": self.references[index]}
        return {**item, "reference_texts": self.texts[index]}


def collate(items: list[dict]) -> dict:
    """Stack inputs, right-pad token ids with ``<pad>`` (id 0) and keep the true lengths."""
    tokens = [item["tokens"] for item in items]
    batch = {
        "inputs": torch.stack([item["inputs"] for item in items]).float(),
        "tokens": pad_sequence(tokens, batch_first=True, padding_value=Vocabulary.pad_id),  # (B, T)
        "lengths": torch.tensor([len(t) for t in tokens]),
        "index": torch.tensor([item["index"] for item in items]),
    }
    for key in ("references", "reference_texts"):
        if key in items[0]:
            batch[key] = [item[key] for item in items]
    return batch


class CaptionDataModule(L.LightningDataModule):
    """Captioned images for training and evaluation.

    Args:
        root: Data set folder.
        format: ``auto`` (from what ``root`` holds), ``imagefolder`` (split folders with
            ``metadata.jsonl``), ``karpathy`` (``dataset_*.json``) or ``flickr8k`` (``captions.txt`` or
            ``Flickr8k.token.txt``).
        image_root: Where the images of a Karpathy/Flickr8k data set are (default ``root/images`` or ``root/Images``).
        test_split: The split ``captioning test`` evaluates (``novel`` on shapes: unseen colour-shape pairs).
        batch_size: Pairs per training batch, per process.
        eval_batch_size: Images per evaluation batch, per process.
        num_workers: Processes reading image files (feature caching and fine-tuning). Cached
            features are indexed in memory, where worker processes only add overhead.
        min_freq: Words seen fewer times in the training captions become ``<unk>``.
        max_caption_length: Captions are cut to this many words.
        cache_dir: Where frozen-encoder features are cached.
        backbone: Encoder architecture (linked from ``model.backbone`` by the CLI).
        pretrained: Encoder starts from ImageNet weights (linked from the model).
        image_size: Side images are resized to (linked from the model).
        spatial_grid: Pooling grid of the encoder (linked from the model).
        cache_features: Use cached features (the CLI sets it when the encoder is frozen).
    """

    def __init__(
        self,
        root: str = "data/shapes",
        format: str = "auto",
        image_root: str | None = None,
        test_split: str = "test",
        batch_size: int = 128,
        eval_batch_size: int = 256,
        num_workers: int = 2,
        min_freq: int = 1,
        max_caption_length: int = 40,
        cache_dir: str = "data/cache",
        backbone: str = "mobilenet_v2",
        pretrained: bool = True,
        image_size: int = 224,
        spatial_grid: int = 1,
        cache_features: bool = True,
    ) -> None:
        super().__init__()
        if format not in FORMATS:
            raise ValueError(f"data.format must be one of {FORMATS}, got {format!r}")
        for option, value in (
            ("batch_size", batch_size),
            ("eval_batch_size", eval_batch_size),
            ("max_caption_length", max_caption_length),
        ):
            if value < 1:
                raise ValueError(f"data.{option} must be >= 1, got {value}")
        self.save_hyperparameters()
        self.root = Path(root)
        self._vocabulary: Vocabulary | None = None
        self._datasets: dict[str, Dataset] = {}
        self._tables: dict[str, datasets.Dataset] = {}
        self._sources: dict[str, list[ImageSource]] = {}

    def splits(self, stage: str | None = None) -> tuple[str, ...]:
        """The splits a stage reads (all of them for ``None``): ``captioning test`` never touches training images."""
        by_stage = {"fit": ("train", "validation"), "validate": ("validation",), "test": (self.hparams.test_split,)}
        return by_stage.get(stage, ("train", "validation", self.hparams.test_split))

    def table(self, split: str) -> datasets.Dataset:
        """The split's captions and image references, read once."""
        if split not in self._tables:
            self._tables[split] = load_split(self.root, split, self.hparams.format, self.hparams.image_root)
        return self._tables[split]

    def image_sources(self, split: str) -> list[ImageSource]:
        """The split's images, checked to exist: only the splits whose pixels are read need them."""
        if split not in self._sources:
            sources = table_sources(self.table(split))
            own_layout = self.hparams.format == "imagefolder" or (
                self.hparams.format == "auto" and detect_format(self.root) == "imagefolder"
            )
            fix = (
                "fix their file_name in metadata.jsonl"
                if own_layout
                else "check data.image_root (where the images are)"
            )
            check_images_exist(sources, split, f"{fix}, or remove their captions")
            self._sources[split] = sources
        return self._sources[split]

    @property
    def vocabulary(self) -> Vocabulary:
        """Built from the training captions only (no peeking at evaluation words)."""
        if self._vocabulary is None:
            sentences = (c for caps in self.table("train")["captions"] for c in caps)
            self._vocabulary = Vocabulary.build(sentences, self.hparams.min_freq)
        return self._vocabulary

    @property
    def vocab_tokens(self) -> list[str]:
        """The vocabulary as plain strings (what the CLI hands to the model)."""
        return self.vocabulary.tokens

    def _features(self, split: str, sources: list[ImageSource], compute: bool) -> Tensor | None:
        h = self.hparams
        # The trainer's device: on a GPU, caching COCO's features takes minutes instead of hours.
        device = self.trainer.strategy.root_device if self.trainer is not None else "cpu"
        return load_or_compute(
            h.cache_dir, f"{self.root.name}-{split}", sources, h.backbone, h.pretrained, h.image_size, h.spatial_grid,
            num_workers=h.num_workers, compute=compute, device=device,
        )  # fmt: skip

    def prepare_data(self) -> None:
        """Build the feature caches of the running stage once (Lightning calls this on one process per node)."""
        if self.hparams.cache_features:
            running = self.trainer.state.fn if self.trainer is not None else None
            for split in self.splits(running.value if running is not None else None):
                self._features(split, self.image_sources(split), compute=True)

    def setup(self, stage: str | None = None) -> None:
        for split in self.splits(stage):
            if split in self._datasets:
                continue
            table = self.table(split)
            sources = self.image_sources(split)
            if self.hparams.cache_features:
                inputs = self._features(split, sources, compute=False)
                if inputs is None:  # prepare_data was skipped (e.g. called outside a Trainer)
                    inputs = self._features(split, sources, compute=True)
            else:
                inputs = ImageFiles(sources, self.hparams.backbone, self.hparams.image_size)
            texts = table["captions"]
            limit = self.hparams.max_caption_length
            ids = [[self._encode(c, limit) for c in caps] for caps in texts]
            if split == "train":
                self._datasets[split] = CaptionPairs(inputs, ids)
            else:
                references = [[tokenize(c)[:limit] for c in caps] for caps in texts]
                self._datasets[split] = CaptionedImages(inputs, ids, references, texts)

    def _encode(self, caption: str, limit: int) -> list[int]:
        ids = self.vocabulary.encode(caption)
        return ids if len(ids) <= limit + 2 else [*ids[: limit + 1], Vocabulary.eos_id]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        h = self.hparams
        workers = 0 if h.cache_features else h.num_workers
        return DataLoader(
            self._datasets[split],
            batch_size=h.batch_size if split == "train" else h.eval_batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=workers > 0,
            collate_fn=collate,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.hparams.test_split, shuffle=False)
