import lightning as L
import pytest
from quiet_trainer import quiet_trainer

from captioning.data.captions import CaptionDataModule
from captioning.lit.captioner import CaptioningModule
from captioning.lit.schedule import warmup_cosine


def test_warmup_rises_linearly_then_cosine_falls_to_the_floor():
    assert [warmup_cosine(step, 4, progress=0.0) for step in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert warmup_cosine(10, 4, progress=0.5, floor=0.1) == pytest.approx(0.55)
    assert warmup_cosine(10, 4, progress=1.0, floor=0.1) == pytest.approx(0.1)
    assert warmup_cosine(10, 4, progress=1.7) == pytest.approx(0.0)  # past the budget: stays at the floor
    assert warmup_cosine(0, 0, progress=0.0) == 1.0  # no warm-up


class _LearningRates(L.Callback):
    """Records the learning rate of every step; optionally stops after the first epoch (an interruption)."""

    def __init__(self, stop_after_first_epoch: bool = False) -> None:
        self.rates: list[float] = []
        self.stop = stop_after_first_epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trainer.should_stop = trainer.should_stop or self.stop


def _fit(tmp_path, data_kwargs, model_kwargs, batches: int, stop: bool = False, ckpt_path=None):
    L.seed_everything(0)
    data = CaptionDataModule(**data_kwargs)
    model = CaptioningModule(vocab_tokens=data.vocab_tokens, warmup_fraction=0.1, **model_kwargs)
    rates = _LearningRates(stop)
    trainer = quiet_trainer(tmp_path, max_epochs=2, limit_train_batches=batches, limit_val_batches=0, callbacks=[rates])
    trainer.fit(model, data, ckpt_path=ckpt_path)
    return trainer, rates.rates


@pytest.mark.slow
def test_a_resumed_run_goes_on_with_its_schedule(tmp_path, tiny_data_kwargs, tiny_model_kwargs):
    _, whole = _fit(tmp_path, tiny_data_kwargs, tiny_model_kwargs, batches=4)
    trainer, first = _fit(tmp_path, tiny_data_kwargs, tiny_model_kwargs, batches=4, stop=True)
    trainer.save_checkpoint(tmp_path / "half.ckpt")
    assert len(first) == 4

    _, same = _fit(tmp_path, tiny_data_kwargs, tiny_model_kwargs, batches=4, ckpt_path=tmp_path / "half.ckpt")
    assert first + same == pytest.approx(whole)  # the interruption changes nothing

    # Twice the processes: half the steps per epoch. The cosine goes on from where it was and ends on time.
    _, other = _fit(tmp_path, tiny_data_kwargs, tiny_model_kwargs, batches=2, ckpt_path=tmp_path / "half.ckpt")
    assert len(other) == 2
    assert other == pytest.approx([whole[4], whole[6]])  # each step now covers two of the uninterrupted run's


@pytest.mark.slow
def test_a_model_loaded_from_a_finished_run_trains_with_a_fresh_schedule(tmp_path, tiny_checkpoint, tiny_data_kwargs):
    from captioning.lit.captioner import load_captioner

    model = load_captioner(tiny_checkpoint).train()  # its checkpoint's schedule had reached the end
    rates = _LearningRates()
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=4, limit_val_batches=0, callbacks=[rates])
    trainer.fit(model, CaptionDataModule(**tiny_data_kwargs))
    assert max(rates.rates) == pytest.approx(model.hparams.lr, rel=0.01)  # warmed up to the full rate, not 0
