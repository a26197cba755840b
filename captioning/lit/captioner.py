"""CaptioningModule: wires encoder, decoder, loss, decoding and caption metrics for Lightning.

The plain ``nn.Module`` parts live in ``captioning.models``; this module only trains them.
Batches carry either cached encoder features (B, D) or normalised images (B, 3, H, W), so the
same step works with a frozen, cached encoder and with a fine-tuned one.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from captioning import decoding
from captioning.caption_metrics import CocoCaptionMetrics
from captioning.checkpoints import read_checkpoint
from captioning.lit.schedule import SCHEDULE_KEY, schedule_segment, schedule_state, warmup_cosine
from captioning.lit.tracking import log_grad_norm
from captioning.metrics import CorpusBLEU
from captioning.models.decoder import Decoder, State
from captioning.models.encoder import ImageEncoder, InitialState
from captioning.vocab import Vocabulary

LR_SCALINGS = ("none", "linear", "sqrt")


class CaptioningModule(L.LightningModule):
    """CNN encoder -> (h0, c0) -> recurrent decoder, trained with teacher forcing.

    Args:
        vocab_tokens: The vocabulary as plain strings (the CLI links it from the data module).
        backbone: torchvision encoder architecture.
        pretrained: Start the encoder from ImageNet weights.
        image_size: Side images are resized to.
        spatial_grid: Encoder pooling grid (1: global average pool; 2-3 keep a coarse layout).
        trainable_blocks: Fine-tune the last N encoder blocks (0: frozen, features cached).
        encoder_lr: Learning rate of the fine-tuned encoder blocks (smaller than ``lr``: they are pretrained).
        cell: Decoder cell: ``lstm``, ``gru``, ``rnn_fused`` or ``rnn``.
        embed_dim: Word embedding size.
        hidden_dim: Decoder state size per layer.
        num_layers: Decoder layers.
        dropout: Decoder dropout.
        lr: Peak learning rate of AdamW (linear warm-up, then cosine decay to zero).
        weight_decay: AdamW weight decay.
        warmup_fraction: Share of the training steps spent warming up.
        max_caption_length: Longest caption decoded, in tokens.
        num_samples: Validation captions printed (and logged with their images) each epoch.
        lr_scaling: How learning rates follow the global batch (per-process batch x processes x
            accumulation) relative to ``reference_batch_size``: ``none``, ``linear`` (Goyal et al.)
            or ``sqrt`` (gentler; often better for Adam-type optimisers).
        reference_batch_size: The global batch size at which ``lr`` and ``encoder_lr`` were tuned.
        compile_decoder: ``torch.compile`` the decoder (GPU runs; state-dict keys are unchanged).
        decoder_init: A language-model checkpoint whose embedding, recurrent and output weights
            start the decoder (decoder transfer; ``configs/lm_shapes.yaml`` trains one on the
            training captions with the same vocabulary, cell and sizes, which is checked). Applied
            when ``fit`` starts; resuming and loading a captioner keep the captioner's own weights.
        coco_metrics: Also log the coco-caption metrics papers report on validation and test
            (``val/cider``, ``val/meteor``, ``val/rougeL``, ``val/bleu1_coco``..``val/bleu4_coco``,
            ``val/distinct_captions``, ``val/words_used``). With Java each evaluation starts the PTB
            tokenizer (a fraction of a second) and the first one METEOR (seconds, once per run);
            off, only nltk BLEU (``val/bleu1``..``val/bleu4``) is logged.
    """

    def __init__(
        self,
        vocab_tokens: list[str] | None = None,
        backbone: str = "mobilenet_v2",
        pretrained: bool = True,
        image_size: int = 224,
        spatial_grid: int = 1,
        trainable_blocks: int = 0,
        encoder_lr: float = 1e-4,
        cell: str = "lstm",
        embed_dim: int = 256,
        hidden_dim: int = 512,
        num_layers: int = 2,
        dropout: float = 0.3,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        warmup_fraction: float = 0.05,
        max_caption_length: int = 40,
        num_samples: int = 8,
        lr_scaling: str = "none",
        reference_batch_size: int = 128,
        compile_decoder: bool = False,
        decoder_init: str | None = None,
        coco_metrics: bool = True,
    ) -> None:
        super().__init__()
        if not vocab_tokens:
            raise ValueError(
                "model.vocab_tokens is required: the CLI links it from the data module's training captions"
            )
        if lr_scaling not in LR_SCALINGS:
            raise ValueError(f"model.lr_scaling must be one of {LR_SCALINGS}, got {lr_scaling!r}")
        if not 0 <= warmup_fraction < 1:
            raise ValueError(f"model.warmup_fraction must be in [0, 1), got {warmup_fraction}")
        self.save_hyperparameters()
        self.vocab = Vocabulary(vocab_tokens)
        self.encoder = ImageEncoder(backbone, pretrained, spatial_grid, trainable_blocks)
        self.decoder = Decoder(len(self.vocab), embed_dim, hidden_dim, num_layers, dropout, cell)
        self.init_state = InitialState(self.encoder.feature_dim, num_layers, hidden_dim, self.decoder.state_tensors)
        self.bleu = {"val": CorpusBLEU(), "test": CorpusBLEU()}
        self.coco = {"val": CocoCaptionMetrics(), "test": CocoCaptionMetrics()}

    # -- model ---------------------------------------------------------------------------------

    def features(self, inputs: Tensor) -> Tensor:
        """Cached features pass through; images go through the CNN."""
        return inputs if inputs.dim() == 2 else self.encoder(inputs)

    def forward(self, inputs: Tensor, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Teacher-forced logits (B, T-1, V) predicting ``tokens[:, 1:]`` from ``tokens[:, :-1]``."""
        state = self.init_state(self.features(inputs))
        return self.decoder(tokens[:, :-1], lengths - 1, state)

    def loss(self, batch: dict) -> Tensor:
        logits = self(batch["inputs"], batch["tokens"], batch["lengths"])
        targets = batch["tokens"][:, 1:]  # (B, T-1); <pad> positions are ignored
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=self.vocab.pad_id)

    @torch.inference_mode()
    def generate(self, inputs: Tensor, strategy: str = "greedy", **options) -> decoding.Decoded:
        """Caption a batch of images or features with any strategy of ``captioning.decoding``."""
        state: State = self.init_state(self.features(inputs))
        start = torch.full((inputs.size(0),), self.vocab.bos_id, dtype=torch.long, device=inputs.device)
        options.setdefault("max_length", self.hparams.max_caption_length)
        return decoding.decode(
            self.decoder.step,
            state,
            start,
            strategy=strategy,
            eos_id=self.vocab.eos_id,
            pad_id=self.vocab.pad_id,
            **options,
        )

    def captions(self, decoded: decoding.Decoded) -> list[str]:
        return [self.vocab.decode(row) for row in decoded.tokens.tolist()]

    # -- Lightning -----------------------------------------------------------------------------

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["lengths"]))
        return loss

    def _evaluate(self, batch: dict, split: str) -> None:
        self.log(f"{split}/loss", self.loss(batch), batch_size=len(batch["lengths"]), sync_dist=True)
        hypotheses = self.captions(self.generate(batch["inputs"]))
        indices = batch["index"].tolist()
        self.bleu[split].update(indices, [h.split() for h in hypotheses], batch["references"])
        if self.hparams.coco_metrics and not self.trainer.sanity_checking:
            self.coco[split].update(indices, hypotheses, batch["reference_texts"])
        if split == "val" and len(self.validation_samples) < self.hparams.num_samples:
            rows = zip(indices, hypotheses, batch["references"], strict=True)
            self.validation_samples += [
                {"index": i, "generated": h, "references": [" ".join(r) for r in refs]} for i, h, refs in rows
            ][: self.hparams.num_samples - len(self.validation_samples)]

    def _log_scores(self, split: str) -> dict[str, float]:
        """nltk BLEU (``bleu1``..``bleu4``, ``count``) and, with ``coco_metrics``, the coco-caption ones."""
        scores = {**self.bleu[split].compute(), **self.coco[split].compute()}
        self.bleu[split].reset()
        self.coco[split].reset()
        # Every process holds the same pooled scores: sync_dist averages equal values, so it changes
        # nothing but keeps every process's logged metrics (and checkpoint monitors) in step.
        self.log_dict({f"{split}/{name}": value for name, value in scores.items()}, sync_dist=True)
        return scores

    def on_validation_epoch_start(self) -> None:
        self.validation_samples: list[dict] = []  # read by the CaptionSamples callback

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        scores = self._log_scores("val")
        if not self.trainer.sanity_checking:
            cider = f", CIDEr-D {scores['cider']:.3f}" if "cider" in scores else ""
            lines = [f"epoch {self.current_epoch}: val BLEU-4 {scores['bleu4']:.3f}{cider}"]
            lines += [
                f"  generated: {s['generated']}\n  reference: {s['references'][0]}" for s in self.validation_samples[:3]
            ]
            self.print("\n".join(lines))

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_scores("test")

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        log_grad_norm(self)

    def setup(self, stage: str) -> None:
        # Lightning restores a resumed checkpoint after setup, so resuming keeps its own weights.
        if stage == "fit" and self.hparams.decoder_init:
            from captioning.lit.language_model import init_decoder_from_language_model

            init_decoder_from_language_model(self.decoder, self.hparams.decoder_init, self.vocab.tokens)

    def configure_model(self) -> None:
        if self.hparams.compile_decoder:
            self.decoder.compile()  # in place: the checkpoint keys stay those of the plain module

    def lr_scale(self) -> float:
        """Factor on the configured learning rates for the global batch size of this run."""
        if self.hparams.lr_scaling == "none":
            return 1.0
        per_process = self.trainer.datamodule.hparams.batch_size
        global_batch = per_process * self.trainer.world_size * self.trainer.accumulate_grad_batches
        ratio = global_batch / self.hparams.reference_batch_size
        return ratio if self.hparams.lr_scaling == "linear" else math.sqrt(ratio)

    def configure_optimizers(self) -> dict:
        scale = self.lr_scale()
        encoder_params = [p for p in self.encoder.parameters() if p.requires_grad]
        groups = [
            {"params": [*self.decoder.parameters(), *self.init_state.parameters()], "lr": self.hparams.lr * scale}
        ]
        if encoder_params:
            groups.append({"params": encoder_params, "lr": self.hparams.encoder_lr * scale})
        optimizer = torch.optim.AdamW(groups, weight_decay=self.hparams.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, int(self.hparams.warmup_fraction * total))
        self.schedule = schedule_segment(self.trainer, self.__dict__.pop("_resumed_schedule", None), warmup)

        def factor(step: int) -> float:
            return warmup_cosine(step, warmup, self.schedule.progress(step))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if hasattr(self, "schedule"):
            checkpoint[SCHEDULE_KEY] = schedule_state(self.trainer, self.schedule)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.vocab.require_same(
            checkpoint["hyper_parameters"].get("vocab_tokens"),
            "score it with `captioning evaluate --checkpoint ...`, or train on the data set it was trained on",
        )
        if self._trainer is not None and self.trainer.state.fn == "fit":  # a resumed fit, not a model loaded to use
            self._resumed_schedule = checkpoint.get(SCHEDULE_KEY)  # read by configure_optimizers, which comes next


def load_captioner(checkpoint: str | Path, map_location: str | torch.device = "cpu") -> CaptioningModule:
    """A trained model from its checkpoint alone, in eval mode.

    ``pretrained=False``: ImageNet weights are not needed (nor downloaded), the checkpoint holds the
    encoder's weights. Read with ``weights_only=True``.
    """
    read_checkpoint(checkpoint, "captioner", mmap=True)  # a clear error for a missing file or the wrong kind
    model = CaptioningModule.load_from_checkpoint(
        checkpoint, map_location=map_location, pretrained=False, weights_only=True
    )
    return model.eval()
