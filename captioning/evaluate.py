"""``captioning evaluate``: a checkpoint's (or a captions file's) scores next to a trivial baseline, split by split.

The baseline answers every image with the most frequent training caption. A captioner that
does not beat it by far has learned the language of the captions, not to look at the images.

Two sets of numbers: the coco-caption metrics (``captioning.caption_metrics``), comparable with
papers, and nltk BLEU on the project's tokenizer, the number validation monitors.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable

from captioning.caption_metrics import score_captions
from captioning.checkpoints import read_checkpoint
from captioning.data.captions import CaptionDataModule
from captioning.lit.captioner import load_captioner
from captioning.metrics import CorpusBLEU
from captioning.records import CaptionFile, image_key
from captioning.vocab import tokenize

_SHOWN_MISSING = 3  # names of uncaptioned images printed per split
SplitCaptions = Callable[[str], tuple[dict[int, str], list[str]]]
"""A split's name -> its captions by table row, and the names of its images without one."""


def evaluate(
    checkpoint: str | None = None,
    captions: str | None = None,
    root: str = "data/shapes",
    splits: list[str] = ["test"],  # noqa: B006 - jsonargparse reads the default from here
    image_root: str | None = None,
    format: str = "auto",
    strategy: str = "greedy",
    batch_size: int = 256,
    examples: int = 4,
    cache_dir: str = "data/cache",
) -> dict[str, dict[str, dict[str, float]]]:
    """Print coco-caption metrics and nltk BLEU of a checkpoint or a captions file, and of the baseline, per split.

    Args:
        checkpoint: A ``.ckpt`` written by ``captioning fit``: it captions each split.
        captions: Instead of ``checkpoint``, a ``.jsonl``/``.csv`` written by ``captioning caption``,
            matched to the split's images by absolute path, else by file name.
        root: The data set folder (any format ``CaptionDataModule`` reads).
        splits: Splits to score, e.g. ``[test, novel]`` on shapes.
        image_root: Where the images are, for Karpathy / Flickr8k data sets (as ``data.image_root``).
        format: ``auto``, ``imagefolder``, ``karpathy`` or ``flickr8k`` (as ``data.format``).
        strategy: Decoding strategy of ``checkpoint`` (``greedy``, ``sample``, ``beam``).
        batch_size: Images decoded at once.
        examples: Captions to print per split.
        cache_dir: Feature cache folder.

    Returns ``{split: {"model": scores, "baseline": scores}}``; scores hold ``count`` (images
    scored), ``missing`` (images of the split without a caption), nltk ``bleu1``..``bleu4`` and the
    keys of ``score_captions``.
    """
    if (checkpoint is None) == (captions is None):
        raise ValueError(
            "give --checkpoint (a .ckpt to caption the splits with) or --captions (a file written by "
            f"`captioning caption`), exactly one of them; got checkpoint={checkpoint!r}, captions={captions!r}"
        )
    if checkpoint is not None:
        data, caption_split = _checkpoint_captions(
            checkpoint, root, image_root, format, strategy, batch_size, cache_dir
        )
        source = f"{checkpoint} ({strategy} decoding)"
    else:
        data = CaptionDataModule(root, format=format, image_root=image_root, cache_dir=cache_dir)
        caption_split = _file_captions(captions, data)
        source = captions
    train_captions = [" ".join(tokenize(c)) for caps in data.table("train")["captions"] for c in caps]
    baseline = Counter(train_captions).most_common(1)[0][0]
    results: dict[str, dict[str, dict[str, float]]] = {}
    rows = []
    for split in splits:
        references = data.table(split)["captions"]
        hypotheses, missing = caption_split(split)
        scored = {i: references[i] for i in hypotheses}
        limit = data.hparams.max_caption_length
        results[split] = {
            "model": {**_scores(hypotheses, scored, limit), "missing": float(len(missing))},
            "baseline": {**_scores(dict.fromkeys(hypotheses, baseline), scored, limit), "missing": float(len(missing))},
        }
        shown = [(i, hypotheses[i], references[i][0]) for i in list(hypotheses)[:examples]]
        rows.append((split, results[split], shown, missing))
    _print_tables(rows, baseline, source)
    return results


def _scores(hypotheses: dict[int, str], references: dict[int, list[str]], limit: int) -> dict[str, float]:
    """nltk BLEU as validation computes it (references cut to ``limit`` words) and the coco-caption metrics."""
    bleu = CorpusBLEU()
    keys = list(hypotheses)
    tokenized = [[tokenize(r)[:limit] for r in references[k]] for k in keys]
    bleu.update(keys, [tokenize(hypotheses[k]) for k in keys], tokenized)
    return {**bleu.compute(), **score_captions(hypotheses, references)}


def _checkpoint_captions(
    checkpoint: str, root: str, image_root: str | None, format: str, strategy: str, batch_size: int, cache_dir: str
) -> tuple[CaptionDataModule, SplitCaptions]:
    """The data module matching the checkpoint's encoder, and the checkpoint's captions of a split."""
    model = load_captioner(checkpoint)
    h = model.hparams
    # load_captioner overrides `pretrained` (the weights come from the checkpoint); the cached
    # features must be those of the encoder as it was trained.
    trained_from = read_checkpoint(checkpoint, "captioner", mmap=True)["hyper_parameters"]["pretrained"]
    data = CaptionDataModule(
        root, format=format, image_root=image_root, eval_batch_size=batch_size, cache_dir=cache_dir,
        backbone=h.backbone,
        pretrained=trained_from, image_size=h.image_size, spatial_grid=h.spatial_grid, cache_features=h.trainable_blocks == 0,
    )  # fmt: skip

    def caption_split(split: str) -> tuple[dict[int, str], list[str]]:
        data.hparams.test_split = split
        data.setup("test")
        hypotheses: dict[int, str] = {}
        for batch in data.test_dataloader():
            decoded = model.captions(model.generate(batch["inputs"], strategy=strategy))
            hypotheses.update(zip(batch["index"].tolist(), decoded, strict=True))
        return hypotheses, []

    return data, caption_split


def _file_captions(path: str, data: CaptionDataModule) -> SplitCaptions:
    """A split's captions from a file of ``captioning caption``: by absolute path, else by unique file name."""
    file = CaptionFile(path)
    if not file.path.is_file():
        raise FileNotFoundError(f"--captions {path} does not exist: write it with `captioning caption --output {path}`")
    by_path: dict[str, str] = {}
    for record in file.records():
        if record.get("caption") is None:
            raise ValueError(
                f"{path} has a record without a caption ({record['image']}): not an output of captioning caption"
            )
        by_path[image_key(record["image"])] = record["caption"]
    names = Counter(os.path.basename(key) for key in by_path)
    by_name = {os.path.basename(key): c for key, c in by_path.items() if names[os.path.basename(key)] == 1}

    def caption_split(split: str) -> tuple[dict[int, str], list[str]]:
        hypotheses, missing = {}, []
        for row, image in enumerate(data.table(split)["image"]):
            where = image.get("path") or ""
            caption = by_path.get(image_key(where)) if where else None
            caption = caption if caption is not None else by_name.get(os.path.basename(where))
            if caption is None:
                missing.append(os.path.basename(where) or f"row {row}")
            else:
                hypotheses[row] = caption
        if not hypotheses:
            raise ValueError(
                f"none of the {len(missing)} images of split {split!r} of {data.root} has a caption in {path} "
                f"(e.g. {missing[0]}): caption them with `captioning caption --input ... --output {path}`, "
                "or check --root and --image_root"
            )
        return hypotheses, missing

    return caption_split


def _print_tables(rows: list, baseline: str, source: str) -> None:
    print(f'\nCaptions of {source} against the most-frequent-caption baseline: "{baseline}"')
    print("\ncoco-caption metrics (PTB tokenizer, CIDEr-D; comparable with papers)")
    names = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", "distinct", "words")
    keys = ("bleu1_coco", "bleu2_coco", "bleu3_coco", "bleu4_coco", "meteor", "rougeL", "cider")
    print(f"{'split':<12}{'images':>7}  {'system':<9}" + "".join(f"{n:>9}" for n in names))
    for split, result, _, _ in rows:
        for system in ("model", "baseline"):
            s = result[system]
            metrics = "".join(f"{s[k]:>9.3f}" if k in s else f"{'-':>9}" for k in keys)
            counts = f"{int(s['distinct_captions']):>9}{int(s['words_used']):>9}"
            print(f"{split:<12}{int(s['count']):>7}  {system:<9}{metrics}{counts}")
    print("\nnltk BLEU on the project's tokenizer (what validation monitors; not comparable with papers)")
    print(f"{'split':<12}{'images':>7}  {'system':<9}" + "".join(f"{n:>9}" for n in names[:4]))
    for split, result, _, _ in rows:
        for system in ("model", "baseline"):
            s = result[system]
            bleu = "".join(f"{s[f'bleu{n}']:>9.3f}" for n in range(1, 5))
            print(f"{split:<12}{int(s['count']):>7}  {system:<9}{bleu}")
    for split, result, _, missing in rows:
        if missing:
            total = len(missing) + int(result["model"]["count"])
            some = ", ".join(missing[:_SHOWN_MISSING])
            print(f"\n{split}: {len(missing)} of {total} images have no caption (e.g. {some}): scored on the others")
    for split, _, shown, _ in rows:
        print(f"\n{split}: a few captions")
        for index, hypothesis, reference in shown:
            print(f"  #{index:<5} model:     {hypothesis}\n         reference: {reference}")
