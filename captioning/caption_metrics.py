"""The caption metrics papers report: BLEU-1..4, METEOR, ROUGE-L and CIDEr-D as coco-caption computes them.

Hypotheses and references go through Stanford's PTB tokenizer (lower-cased, punctuation removed),
then pycocoevalcap's scorers: the numbers are those of the coco-caption toolkit and comparable with
published ones. nltk BLEU on the project's tokenizer (``captioning.metrics``) is not: it keeps
punctuation as words and cuts references to the training length.

Two scorers need Java (the PTB tokenizer and METEOR). Without a ``java`` on the PATH, one warning
says so and the pure-Python scorers (BLEU, ROUGE-L, CIDEr-D) run on :func:`ptb_like_tokenize`
instead, with METEOR left out: close to the Java numbers, not equal (see its docstring).

CIDEr-D weighs n-grams by their document frequency over the references being scored, as
coco-caption does: the same captions score differently against another reference set, and a set
of one image scores 0 (every n-gram is in every document).
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
import subprocess
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path

import torch.distributed as dist
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer import ptbtokenizer

from captioning.metrics import distributed, pool_by_index

log = logging.getLogger(__name__)

_PTB_JAR = Path(ptbtokenizer.__file__).with_name(ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR)
_PUNCTUATION = frozenset(ptbtokenizer.PUNCTUATIONS)


def java_available() -> bool:
    return shutil.which("java") is not None


@functools.cache
def _warn_no_java() -> None:
    """Once per process: every validation epoch would otherwise repeat it."""
    log.warning(
        "no java on the PATH: coco metrics use a pure-Python PTB-like tokenizer and leave out METEOR "
        "(install a Java runtime, e.g. apt-get install default-jre-headless, for the published numbers)"
    )


def ptb_tokenize(sentences: Sequence[str]) -> list[str]:
    """coco-caption's tokenization: Stanford PTBTokenizer (lower-cased), then its punctuation removed.

    The same jar, options and punctuation list as ``pycocoevalcap``'s ``PTBTokenizer``, but the
    sentences go through a pipe in UTF-8: that class writes a temporary file into its own
    site-packages folder (which fails on a read-only install) and reads it in the platform's encoding.
    """
    lines = "".join(s.replace("\r", " ").replace("\n", " ") + "\n" for s in sentences)
    command = ["java", "-cp", str(_PTB_JAR), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines"]
    done = subprocess.run(
        [*command, "-lowerCase", "-encoding", "UTF-8"], input=lines.encode(), capture_output=True, check=False
    )
    tokenized = done.stdout.decode().split("\n")[: len(sentences)]
    if done.returncode != 0 or len(tokenized) != len(sentences):
        raise RuntimeError(f"the PTB tokenizer ({_PTB_JAR}) failed: {done.stderr.decode().strip()[-500:]}")
    return [" ".join(w for w in line.split() if w not in _PUNCTUATION) for line in tokenized]


# What PTBTokenizer does to ordinary caption text, in the order tried: acronyms keep their dots
# ("u.s."), numbers their separators ("1,000", "4.5"), negations and clitics split off ("do n't",
# "dog 's"), words keep inner hyphens, slashes and apostrophes ("t-shirt", "red/blue", "o'clock"), "..." and "--" stay
# whole, any other mark is a token of its own.
_CLITIC = r"(?:s|re|ve|ll|d|m)(?![a-z0-9])"
_PTB_LIKE = re.compile(
    rf"(?:[a-z]\.){{2,}}|\d+(?:[.,:/]\d+)+|\w+(?=n't)|n't|'{_CLITIC}|\w+(?:[-/]\w+|'(?!{_CLITIC}|t\b)\w+)*|\.\.\.|--|\S"
)
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}


def ptb_like_tokenize(sentence: str) -> str:
    """A pure-Python stand-in for :func:`ptb_tokenize`, for machines without Java.

    Lower-cases, splits as PTBTokenizer does on ordinary caption text and removes the same
    punctuation; brackets become ``-lrb-`` etc. and stay, as they do in coco-caption (its list
    names the upper-case forms, which lower-casing never produces). Abbreviations such as "mr."
    lose their dot here and rarer symbols may split differently.
    """
    tokens = (_BRACKETS.get(t, t) for t in _PTB_LIKE.findall(sentence.lower()))
    return " ".join(t for t in tokens if t not in _PUNCTUATION and t != '"')


def tokenize_captions(sentences: Sequence[str]) -> list[str]:
    """PTB-tokenized sentences: with Java if there is one, else the pure-Python stand-in (warned once)."""
    if java_available():
        return ptb_tokenize(sentences)
    _warn_no_java()
    return [ptb_like_tokenize(s) for s in sentences]


def caption_diversity(tokenized: Iterable[str]) -> dict[str, float]:
    """Distinct captions and distinct words among hypotheses: 1 and a handful for "the same caption for every photo"."""
    captions = list(tokenized)
    return {
        "distinct_captions": float(len(set(captions))),
        "words_used": float(len({w for c in captions for w in c.split()})),
    }


@functools.cache
def _meteor():
    """One METEOR process for the whole run: starting it loads a paraphrase table (~10 s on 2 CPU cores)."""
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()


def score_captions(
    hypotheses: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]
) -> dict[str, float]:
    """coco-caption metrics of one caption per image against that image's references.

    Returns ``bleu1_coco``..``bleu4_coco``, ``meteor`` (with Java only), ``rougeL``, ``cider``
    (CIDEr-D), ``distinct_captions`` and ``words_used`` (of the tokenized hypotheses). Keys are image
    ids of any kind; both mappings must hold the same ones.
    """
    if hypotheses.keys() != references.keys():
        missing, extra = len(references.keys() - hypotheses.keys()), len(hypotheses.keys() - references.keys())
        raise ValueError(f"{missing} images have references but no caption, {extra} a caption but no references")
    if not hypotheses:
        raise ValueError("no captions to score")
    keys = list(hypotheses)
    if any(not references[k] for k in keys):
        raise ValueError("every image needs at least one reference caption")
    flat = [hypotheses[k] for k in keys] + [r for k in keys for r in references[k]]
    tokenized = iter(tokenize_captions(flat))
    res = {k: [next(tokenized)] for k in keys}
    gts = {k: [next(tokenized) for _ in references[k]] for k in keys}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"bleu{n}_coco": float(b) for n, b in enumerate(bleu, 1)}
    if java_available():
        scores["meteor"] = float(_meteor().compute_score(gts, res)[0])
    scores["rougeL"] = float(Rouge().compute_score(gts, res)[0])
    scores["cider"] = float(Cider().compute_score(gts, res)[0])
    return {**scores, **caption_diversity(r[0] for r in res.values())}


class CocoCaptionMetrics:
    """Raw caption strings keyed by image index; ``compute`` pools all processes and scores once.

    The pooled captions are scored on the first process only (one PTB and one METEOR JVM, not one
    per process) and the scores broadcast, so that every process logs the same numbers.
    """

    def __init__(self) -> None:
        self.captions: dict[int, tuple[str, list[str]]] = {}

    def reset(self) -> None:
        self.captions = {}

    def update(self, indices: Sequence[int], hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
        for index, hypothesis, refs in zip(indices, hypotheses, references, strict=True):
            self.captions[int(index)] = (hypothesis, list(refs))

    def compute(self) -> dict[str, float]:
        """The scores of :func:`score_captions` over every process's captions (empty if there are none)."""
        pooled = pool_by_index(self.captions)
        if not pooled:  # nothing was evaluated: nothing to log
            return {}
        if not distributed():
            return _score_pooled(pooled)
        shared = [_score_pooled(pooled) if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(shared, src=0)
        return shared[0]


def _score_pooled(pooled: dict[int, tuple[str, list[str]]]) -> dict[str, float]:
    return score_captions({i: h for i, (h, _) in pooled.items()}, {i: refs for i, (_, refs) in pooled.items()})
