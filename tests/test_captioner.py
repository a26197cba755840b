import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from quiet_trainer import quiet_trainer  # tests/ is on sys.path

from captioning.data.captions import CaptionDataModule
from captioning.lit.captioner import CaptioningModule, load_captioner
from captioning.models.decoder import Decoder


@pytest.fixture()
def data(tiny_data_kwargs) -> CaptionDataModule:
    return CaptionDataModule(**tiny_data_kwargs)


@pytest.fixture()
def model(data, tiny_model_kwargs) -> CaptioningModule:
    L.seed_everything(0)
    return CaptioningModule(vocab_tokens=data.vocab_tokens, **tiny_model_kwargs)


def test_teacher_forcing_shapes_and_padding_is_ignored():
    torch.manual_seed(0)
    decoder = Decoder(vocab_size=11, embed_dim=8, hidden_dim=16, num_layers=2, dropout=0.0).eval()
    tokens = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0]])
    lengths = torch.tensor([5, 3])
    state = (torch.randn(2, 2, 16), torch.randn(2, 2, 16))
    logits = decoder(tokens[:, :-1], lengths - 1, state)
    assert logits.shape == (2, 4, 11)  # (B, T-1, V)
    # What sits in the padding changes nothing.
    noisy = tokens.clone()
    noisy[1, 3:] = 9
    assert torch.allclose(decoder(noisy[:, :-1], lengths - 1, state)[1, :2], logits[1, :2])
    # The loss over the padded batch is the mean over real tokens only.
    targets = tokens[:, 1:]
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=0)
    real = torch.cat([logits[0, :4], logits[1, :2]])
    assert torch.allclose(loss, F.cross_entropy(real, torch.cat([targets[0, :4], targets[1, :2]])))


def test_module_loss_ignores_padding(model, data):
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    model.eval()
    loss = model.loss(batch)
    batch["tokens"][batch["tokens"] == 0] = 0  # padding id stays padding; now pad with a longer tail
    longer = dict(batch, tokens=F.pad(batch["tokens"], (0, 3)))
    assert torch.allclose(model.loss(longer), loss)


class _RecordNorms(Callback):
    """Records the global gradient norm the optimizer stepped with (after clipping, before zero_grad)."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        def record(optimizer, args, kwargs):
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            self.norms.append(torch.stack([g.norm() for g in grads]).norm().item())

        trainer.optimizers[0].register_step_post_hook(record)


def test_gradient_clipping_bounds_the_global_norm(model, data, tmp_path):
    recorder = _RecordNorms()
    trainer = quiet_trainer(tmp_path, max_steps=4, gradient_clip_val=0.05, callbacks=[recorder], limit_val_batches=0)
    trainer.fit(model, data)
    assert len(recorder.norms) == 4
    assert max(recorder.norms) <= 0.05 + 1e-6
    assert trainer.logged_metrics["train/grad_norm"] > 0.05  # the unclipped norm was larger


def test_short_training_drives_the_loss_down(model, data, tmp_path):
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    model.eval()
    before = model.loss(batch).item()
    quiet_trainer(tmp_path, max_epochs=8, limit_val_batches=0).fit(model, data)
    model.eval()
    after = model.loss(batch).item()
    assert after < 0.6 * before, (before, after)


@pytest.mark.slow
def test_checkpoint_round_trip_weights_only_gives_identical_captions(model, data, tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=2, limit_val_batches=0)
    trainer.fit(model, data)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    raw = torch.load(path, weights_only=True)  # nothing but tensors and plain containers inside
    assert raw["hyper_parameters"]["vocab_tokens"] == data.vocab_tokens
    assert raw["hyper_parameters"]["backbone"] == "mobilenet_v2"
    restored = load_captioner(path)
    data.setup("test")
    inputs = next(iter(data.test_dataloader()))["inputs"]
    model.eval()
    assert model.captions(model.generate(inputs)) == restored.captions(restored.generate(inputs))
    assert torch.equal(model.generate(inputs).tokens, restored.generate(inputs).tokens)


def test_checkpoint_with_another_vocabulary_is_refused(model, data, tmp_path, tiny_model_kwargs):
    trainer = quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(model, data)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    other = CaptioningModule(vocab_tokens=[*data.vocab_tokens, "zebra"], **tiny_model_kwargs)
    with pytest.raises(ValueError, match="vocabulary"):
        other.on_load_checkpoint(torch.load(tmp_path / "model.ckpt", weights_only=True))


@pytest.mark.slow  # two short fits: ~15 s on 2 shared CPU cores
def test_validation_logs_the_coco_metrics(model, data, tmp_path, monkeypatch, tiny_model_kwargs):
    from captioning import caption_metrics

    monkeypatch.setattr(caption_metrics, "java_available", lambda: False)  # no METEOR JVM: seconds faster
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2)
    trainer.fit(model, data)
    logged = trainer.logged_metrics
    assert {"val/cider", "val/rougeL", "val/bleu4_coco", "val/distinct_captions", "val/bleu4"} <= logged.keys()
    quiet = CaptioningModule(vocab_tokens=data.vocab_tokens, coco_metrics=False, **tiny_model_kwargs)
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2)
    trainer.fit(quiet, data)
    assert "val/bleu4" in trainer.logged_metrics and "val/cider" not in trainer.logged_metrics
