"""LanguageModule: truncated BPTT, metrics, checkpoints and generation, configs, decoder transfer, gradient flow."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from quiet_trainer import quiet_trainer  # tests/ is on sys.path

from captioning.cli import main as cli_main
from captioning.data.text import IGNORE_INDEX, LanguageModelDataModule
from captioning.generate import generate
from captioning.lit.gradient_flow import GradientFlow, hidden_gradient_norms
from captioning.lit.language_model import (
    LanguageModule,
    init_decoder_from_language_model,
    load_language_model,
)
from captioning.lm_cli import lm_main
from captioning.models.decoder import Decoder
from captioning.models.language_model import RNNLanguageModel
from captioning.vocab import Vocabulary

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = {"embed_dim": 8, "hidden_dim": 16, "num_layers": 2, "dropout": 0.0, "sample_tokens": 0}


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"Line {i}: the quick brown fox jumps over {i % 7} lazy dogs.\n" for i in range(60)))
    return path


@pytest.fixture()
def data(corpus: Path) -> LanguageModelDataModule:
    return LanguageModelDataModule(files=[str(corpus)], batch_size=4, eval_batch_size=2, bptt=12)


def _module(data: LanguageModelDataModule, cell: str = "lstm", **kwargs) -> LanguageModule:
    torch.manual_seed(0)
    return LanguageModule(data.vocab_tokens, level=data.level, cell=cell, **{**TINY, **kwargs})


# --- truncated BPTT through training_step --------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_tbptt_values_cross_the_chunk_boundary_gradients_do_not(data, cell: str) -> None:
    data.setup("fit")
    first, second = list(data.train_dataloader())[:2]
    module = _module(data, cell)
    embedded: list[torch.Tensor] = []
    module.model.embed.register_forward_hook(lambda mod, args, out: embedded.append(out))

    module.on_train_epoch_start()
    module.training_step(first, 0)
    loss = module.training_step(second, 1)
    # The second chunk's loss reaches the second chunk's embeddings, not the first's.
    grad_first, grad_second = torch.autograd.grad(loss, [embedded[0], embedded[1]], allow_unused=True)
    assert grad_first is None or torch.count_nonzero(grad_first) == 0
    assert torch.count_nonzero(grad_second) > 0

    # ... while the first chunk's tokens still change the second chunk's output (values carry over).
    other = dict(first, inputs=torch.roll(first["inputs"], 1, dims=1))
    module.on_train_epoch_start()
    module.training_step(other, 0)
    assert not torch.allclose(module.training_step(second, 1), loss)
    # A new epoch starts from zeros: the second chunk alone is the same as after a reset.
    module.on_train_epoch_start()
    fresh = module.training_step(second, 0)
    module.on_train_epoch_start()
    assert torch.allclose(module.training_step(second, 0), fresh)


def test_validation_in_mid_epoch_leaves_the_training_state_alone(data) -> None:
    data.setup("fit")
    module = _module(data)
    module.on_train_epoch_start()
    module.training_step(next(iter(data.train_dataloader())), 0)
    kept = [s.clone() for s in module._train_state]
    module.on_validation_epoch_start()
    for batch in data.val_dataloader():
        module.validation_step(batch, 0)
    assert all(torch.equal(a, b) for a, b in zip(kept, module._train_state, strict=True))


# --- metrics ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["char", "word"])
def test_validation_loss_ppl_and_bits_per_character(corpus: Path, tmp_path: Path, level: str) -> None:
    data = LanguageModelDataModule(files=[str(corpus)], level=level, eval_batch_size=1, bptt=10, val_fraction=0.2)
    module = _module(data).eval()
    metrics = quiet_trainer(tmp_path).validate(module, data, verbose=False)[0]

    # Reference: the whole validation span as one sequence through the model, state carried throughout.
    inputs, targets, chars = data.streams("validation")
    with torch.no_grad():
        logits, _ = module.model(inputs)
    keep = targets != IGNORE_INDEX
    nats = F.cross_entropy(logits[keep], targets[keep], reduction="sum").item()
    loss = nats / keep.sum().item()
    assert metrics["val/loss"] == pytest.approx(loss, rel=1e-4)
    assert metrics["val/ppl"] == pytest.approx(math.exp(loss), rel=1e-4)
    if level == "char":  # one character per token
        assert metrics["val/bpc"] == pytest.approx(loss / math.log(2), rel=1e-4)
    else:  # normalised by the characters of the validation text, not by tokens
        tokens, weights = data.spans()["validation"]
        assert chars.sum().item() == pytest.approx(sum(weights[1:]))
        assert metrics["val/bpc"] == pytest.approx(nats / math.log(2) / sum(weights[1:]), rel=1e-4)
        # words are longer than one character
        assert metrics["val/bpc"] < metrics["val/loss"] / math.log(2)


class _FirstChunk(L.Callback):
    """Saves the first validation chunk each process reads (a class at module level: DDP spawn pickles it)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0:
            torch.save(batch["inputs"], self.directory / f"rank{trainer.global_rank}.pt")


@pytest.mark.slow
def test_ddp_processes_split_the_streams_and_sum_exactly(corpus: Path, tmp_path: Path) -> None:
    def data() -> LanguageModelDataModule:
        return LanguageModelDataModule(files=[str(corpus)], batch_size=4, eval_batch_size=4, bptt=12)

    module = _module(data())
    one = quiet_trainer(tmp_path).validate(module, data(), verbose=False)[0]
    trainer = quiet_trainer(tmp_path, strategy="ddp_spawn", devices=2, callbacks=[_FirstChunk(tmp_path)])
    two = trainer.validate(module, data(), verbose=False)[0]
    # Each process reads its own two of the four streams ...
    whole = data().streams("validation")[0][:, :12]
    assert torch.equal(torch.load(tmp_path / "rank0.pt"), whole[:2])
    assert torch.equal(torch.load(tmp_path / "rank1.pt"), whole[2:])
    # ... and the summed nats, tokens and characters are reduced before dividing: the numbers
    # are those of one process reading all four.
    for key in ("val/loss", "val/bpc", "val/ppl"):
        assert two[key] == pytest.approx(one[key], rel=1e-5)


def test_cosine_schedule_warms_up_then_decays_to_the_floor(data, tmp_path: Path) -> None:
    module = _module(data, lr=1e-2, warmup_steps=2, min_lr_ratio=0.1)
    lrs: list[float] = []

    class Record(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
            lrs.append(optimizer.param_groups[0]["lr"])

    quiet_trainer(tmp_path, max_steps=6, limit_val_batches=0, callbacks=[Record()]).fit(module, data)
    progress = [(s - 0) / 6 for s in range(2, 6)]
    want = [5e-3, 1e-2] + [1e-2 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))) for p in progress]
    assert lrs == pytest.approx(want)


# --- checkpoints and generation ------------------------------------------------------------------


def test_checkpoint_reloads_with_weights_only_and_generates_the_same_text(data, tmp_path: Path, capsys) -> None:
    module = _module(data, cell="gru", sample_tokens=5)
    trainer = quiet_trainer(tmp_path, max_steps=3, limit_val_batches=1)
    trainer.fit(module, data)
    path = tmp_path / "lm.ckpt"
    trainer.save_checkpoint(path)

    # plain tensors and values only
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"]["vocab_tokens"] == data.vocab_tokens
    reloaded = load_language_model(path)
    for key, value in module.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value)

    options = {"prompt": "Line 3", "max_tokens": 40, "temperature": 0.9, "top_k": 20}
    first = generate(str(path), seed=7, **options)
    assert (
        first
        == generate(str(path), seed=7, **options)
        == module.generate("Line 3", "sample", 40, seed=7, temperature=0.9, top_k=20)
    )
    assert first != generate(str(path), seed=8, **options)
    assert first.startswith("Line 3") and len(first) == len("Line 3") + 40
    for strategy in ("greedy", "beam"):
        assert len(generate(str(path), prompt="", strategy=strategy, max_tokens=15)) == 15
    capsys.readouterr()
    cli_main(["generate", "--checkpoint", str(path), "--prompt", "Line 3", "--max_tokens", "40", "--temperature", "0.9",
              "--top_k", "20", "--seed", "7"])  # fmt: skip
    assert capsys.readouterr().out.strip() == first.strip()
    with pytest.raises(ValueError, match="strategy"):
        generate(str(path), strategy="nucleus")


def test_word_level_generation_starts_each_line_with_bos(corpus: Path) -> None:
    data = LanguageModelDataModule(files=[str(corpus)], level="word")
    module = _module(data).eval()
    step = module._step_fn()
    state = module.model.init_state(2)
    tokens = torch.tensor([Vocabulary.eos_id, 10])
    with torch.no_grad():
        logits, new_state = step(tokens, state)
        eos_logits, eos_state = module.model.step(tokens, state)
        bos_logits, bos_state = module.model.step(torch.full_like(tokens, Vocabulary.bos_id), eos_state)
    assert torch.allclose(logits[0, 4:], bos_logits[0, 4:]) and torch.allclose(logits[1, 4:], eos_logits[1, 4:])
    assert torch.allclose(new_state[0][:, 0], bos_state[0][:, 0]) and torch.allclose(
        new_state[0][:, 1], eos_state[0][:, 1]
    )
    assert torch.isinf(logits[:, [Vocabulary.pad_id, Vocabulary.bos_id]]).all()  # never generated
    text = module.generate("the quick", "sample", 30)
    assert text.startswith("the quick ") and "<bos>" not in text


# --- configs ---------------------------------------------------------------------------------------

FAST = [
    "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2",
    "--trainer.enable_progress_bar", "false", "--model.embed_dim", "8", "--model.hidden_dim", "16",
    "--model.num_layers", "1", "--model.sample_tokens", "10",
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("lm*.yaml")))
def test_every_lm_config_fits(name: str, corpus: Path, shapes_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the configs write under runs/<run_name>/version_<N>/
    source = {
        "lm.yaml": ["--data.max_chars", "20000"],
        "lm_shakespeare.yaml": ["--data.files", f"[{corpus}]"],
        "lm_shapes.yaml": ["--data.caption_root", str(shapes_root)],
    }
    cli = lm_main(["fit", "--config", str(CONFIGS / name), *FAST, *source.get(name, [])])
    assert 1 <= cli.trainer.global_step <= 3
    assert math.isfinite(float(cli.trainer.callback_metrics["val/bpc"]))
    last = torch.load(next(tmp_path.glob("runs/**/last.ckpt")), map_location="cpu", weights_only=True)
    assert last["hyper_parameters"]["level"] == cli.datamodule.level
    report = next(tmp_path.glob("runs/*/version_0/report.html")).read_text()
    assert "Bits per character" in report and "data:image/png;base64," in report


# --- decoder transfer ------------------------------------------------------------------------------


def test_caption_decoder_starts_from_a_language_model_trained_on_the_captions(
    shapes_root: Path, tmp_path: Path
) -> None:
    from captioning.data.captions import CaptionDataModule

    data = LanguageModelDataModule(caption_root=str(shapes_root), level="word", batch_size=4, bptt=10)
    module = _module(data)
    trainer = quiet_trainer(tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(module, data)
    path = tmp_path / "lm.ckpt"
    trainer.save_checkpoint(path)

    caption_vocab = CaptionDataModule(root=str(shapes_root)).vocab_tokens
    decoder = Decoder(len(caption_vocab), TINY["embed_dim"], TINY["hidden_dim"], TINY["num_layers"], 0.0, "lstm").eval()
    init_decoder_from_language_model(decoder, path, caption_vocab)
    tokens = torch.tensor([Vocabulary.bos_id, 5])
    state = module.model.init_state(2)
    assert torch.allclose(decoder.step(tokens, state)[0], module.model.eval().step(tokens, state)[0])

    with pytest.raises(ValueError, match="vocabulary"):
        init_decoder_from_language_model(decoder, path, caption_vocab[:-1])
    bigger = Decoder(len(caption_vocab), TINY["embed_dim"], 32, TINY["num_layers"], 0.0, "lstm")
    with pytest.raises(ValueError, match="hidden_dim"):
        init_decoder_from_language_model(bigger, path, caption_vocab)


# --- gradient flow ---------------------------------------------------------------------------------


def test_hidden_gradient_norms_end_with_the_output_layer_gradient() -> None:
    torch.manual_seed(0)
    model = RNNLanguageModel(11, 4, 6, num_layers=1, dropout=0.0, cell="rnn")
    inputs, target = torch.randint(4, 11, (3, 9)), torch.randint(4, 11, (3,))
    norms = hidden_gradient_norms(model, inputs, target)
    assert norms.shape == (10,) and (norms > 0).all()  # h_0 .. h_9
    # dL/dh_T of a mean cross-entropy over B rows is W_out^T (softmax - onehot) / B per row.
    with torch.no_grad():
        logits, _ = model(inputs)
        residual = logits[:, -1].softmax(-1) - F.one_hot(target, 11)
        want = (residual @ model.out.weight).norm(dim=1).mean() / 3
    assert norms[-1].item() == pytest.approx(want.item(), rel=1e-5)
    # Scaled-down recurrent weights make the gradient vanish step by step, backwards.
    with torch.no_grad():
        model.rnn.weight_hh_l0.mul_(0.1)
    assert (hidden_gradient_norms(model, inputs, target).diff() > 0).all()


def test_gradient_flow_callback_writes_a_plot(data, tmp_path: Path) -> None:
    callback = GradientFlow(rows=2, dirpath=str(tmp_path / "plots"))
    quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=0, callbacks=[callback]).fit(
        _module(data), data
    )
    assert callback.last_path == tmp_path / "plots" / "gradient_flow_epoch0.png"
    assert callback.last_path.read_bytes()[:4] == b"\x89PNG"
    assert callback.last_norms.shape == (13,)
