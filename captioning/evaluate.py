"""``captioning evaluate``: BLEU of a checkpoint next to a trivial baseline, split by split.

The baseline answers every image with the most frequent training caption. A captioner that
does not beat it by far has learned the language of the captions, not to look at the images.
"""

from __future__ import annotations

from collections import Counter

from captioning.checkpoints import read_checkpoint
from captioning.data.captions import CaptionDataModule
from captioning.lit.captioner import load_captioner
from captioning.metrics import CorpusBLEU
from captioning.vocab import tokenize


def evaluate(
    checkpoint: str,
    root: str = "data/shapes",
    splits: list[str] = ["test"],  # noqa: B006 - jsonargparse reads the default from here
    image_root: str | None = None,
    format: str = "auto",
    strategy: str = "greedy",
    batch_size: int = 256,
    examples: int = 4,
    cache_dir: str = "data/cache",
) -> dict[str, dict[str, float]]:
    """Print BLEU-1..4 of a checkpoint and of the most-frequent-caption baseline on each split.

    Args:
        checkpoint: A ``.ckpt`` written by ``captioning fit``.
        root: The data set folder (any format ``CaptionDataModule`` reads).
        splits: Splits to score, e.g. ``[test, novel]`` on shapes.
        image_root: Where the images are, for Karpathy / Flickr8k data sets (as ``data.image_root``).
        format: ``auto``, ``imagefolder``, ``karpathy`` or ``flickr8k`` (as ``data.format``).
        strategy: Decoding strategy (``greedy``, ``sample``, ``beam``).
        batch_size: Images decoded at once.
        examples: Captions to print per split.
        cache_dir: Feature cache folder.
    """
    model = load_captioner(checkpoint)
    h = model.hparams
    # load_captioner overrides `pretrained` (the weights come from the checkpoint); the cached
    # features must be those of the encoder as it was trained.
    trained_from = read_checkpoint(checkpoint, "captioner", mmap=True)["hyper_parameters"]["pretrained"]
    data = CaptionDataModule(
        root, format=format, image_root=image_root, test_split=splits[0], eval_batch_size=batch_size, cache_dir=cache_dir,
        backbone=h.backbone,
        pretrained=trained_from, image_size=h.image_size, spatial_grid=h.spatial_grid, cache_features=h.trainable_blocks == 0,
    )  # fmt: skip
    train_captions = [tokenize(c) for caps in data.table("train")["captions"] for c in caps]
    baseline = Counter(" ".join(c) for c in train_captions).most_common(1)[0][0].split()
    results: dict[str, dict[str, float]] = {}
    rows = []
    for split in splits:
        data.hparams.test_split = split
        data.setup("test")
        model_bleu, baseline_bleu = CorpusBLEU(), CorpusBLEU()
        shown = []
        for batch in data.test_dataloader():
            hypotheses = model.captions(model.generate(batch["inputs"], strategy=strategy))
            indices = batch["index"].tolist()
            model_bleu.update(indices, [hyp.split() for hyp in hypotheses], batch["references"])
            baseline_bleu.update(indices, [baseline] * len(indices), batch["references"])
            shown += [
                (i, hyp, " ".join(refs[0]))
                for i, hyp, refs in zip(indices, hypotheses, batch["references"], strict=True)
            ][: examples - len(shown)]
        results[split] = {"model": model_bleu.compute(), "baseline": baseline_bleu.compute()}
        rows.append((split, results[split], shown))
    _print_table(rows, " ".join(baseline), strategy)
    return results


def _print_table(rows: list, baseline: str, strategy: str) -> None:
    print(f'\nBLEU ({strategy} decoding) against the most-frequent-caption baseline: "{baseline}"')
    print(f"{'split':<12}{'images':>7}  {'system':<9}{'BLEU-1':>8}{'BLEU-2':>8}{'BLEU-3':>8}{'BLEU-4':>8}")
    for split, result, _ in rows:
        for system in ("model", "baseline"):
            s = result[system]
            print(
                f"{split:<12}{int(s['count']):>7}  {system:<9}" + "".join(f"{s[f'bleu{n}']:>8.3f}" for n in range(1, 5))
            )
    for split, _, shown in rows:
        print(f"\n{split}: a few captions")
        for index, hypothesis, reference in shown:
            print(f"  #{index:<5} model:     {hypothesis}\n         reference: {reference}")
