"""The vanishing gradient made visible: ||dL_T / dh_t|| for every time step t of a chunk.

``L_T`` is the loss of the prediction at the *last* step of a chunk and ``h_t`` the hidden
state (all layers) after step t. The norm at step t says how much the state t steps back
still matters to that prediction, as far as gradient descent can tell. For a vanilla RNN
it decays roughly geometrically with the distance T - t (the Jacobian dh_{t+1}/dh_t is
W_hh scaled by tanh' <= 1); the LSTM's additive cell path keeps it up far longer.

:func:`hidden_gradient_norms` computes it; :class:`GradientFlow` is a callback that plots it
after training epochs (PNG, and to the experiment logger when it takes images);
``scripts/gradient_flow.py`` compares a vanilla RNN and an LSTM of the same size.

Dimension letters: B batch, T time steps, L layers, H hidden, V vocabulary.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from captioning.models.language_model import RNNLanguageModel


def hidden_gradient_norms(model: RNNLanguageModel, inputs: Tensor, target: Tensor) -> Tensor:
    """``||dL_T / dh_t||`` for t = 0..T (``h_0`` the zero initial state), averaged over the batch rows.

    Args:
        model: any :class:`RNNLanguageModel` (every cell works: the chunk is run one step at
            a time so that each ``h_t`` is a tensor of the graph).
        inputs: (B, T) token ids, run from a zero state.
        target: (B,) the token each row should predict after its last input.

    Returns:
        (T + 1,) float tensor on the CPU; entry t belongs to h_t.
    """
    was_training = model.training
    model.eval()  # no dropout noise in the measurement
    # cuDNN refuses RNN backward in eval mode; the native kernels compute the same thing.
    with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
        state = model.init_state(inputs.size(0))
        state = state.requires_grad_() if isinstance(state, Tensor) else tuple(s.requires_grad_() for s in state)
        hiddens = []  # h_0 .. h_{T-1}: (L, B, H) each, the state entering the next step
        for t in range(inputs.size(1)):
            hiddens.append(state if isinstance(state, Tensor) else state[0])
            output, state = model.rnn(model.embed(inputs[:, t : t + 1]), state)  # (B, 1, H)
        # h_T reaches the loss through the output layer only: its top layer is the output.
        loss = F.cross_entropy(model.out(output[:, -1]).float(), target)
        *grads, last = torch.autograd.grad(loss, [*hiddens, output])
    model.train(was_training)
    per_row = [g.transpose(0, 1).flatten(1).norm(dim=1) for g in grads]  # T x (B,)
    per_row.append(last[:, -1].norm(dim=1))  # (B,)
    return torch.stack(per_row).mean(dim=1).detach().float().cpu()  # (T + 1,)


def plot_gradient_flow(curves: dict[str, Tensor], path: str | Path, title: str = "") -> Path:
    """One line per curve (e.g. per cell) of ``hidden_gradient_norms``, log scale; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    figure = _figure(curves, title, plt)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _figure(curves: dict[str, Tensor], title: str, plt):
    figure, axes = plt.subplots(figsize=(7, 4), layout="constrained")
    for name, norms in curves.items():
        steps = torch.arange(len(norms))
        axes.semilogy(steps, norms.clamp(min=1e-30), label=name)
    last = max(len(n) for n in curves.values()) - 1
    axes.set_xlabel(f"time step t (the loss is at the last step, t = {last})")
    axes.set_ylabel("||dL_T / dh_t||  (mean over rows)")
    axes.set_title(title or "gradient of the last step's loss w.r.t. each hidden state")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    return figure


class GradientFlow(Callback):
    """Plot ``||dL_T / dh_t||`` over the first training chunk after every ``every_n_epochs`` epochs.

    The PNG goes to ``dirpath`` (default: the trainer's log directory, else its root
    directory) as ``gradient_flow_epoch{N}.png``; loggers with ``log_image`` (W&B, Neptune)
    or TensorBoard also receive the figure. Runs on the main process only.

    Args:
        every_n_epochs: Plot after every N-th training epoch.
        rows: Batch rows of the chunk used (fewer is faster; the curve is an average).
        dirpath: Where to write the PNGs.
    """

    def __init__(self, every_n_epochs: int = 1, rows: int = 8, dirpath: str | None = None) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if rows < 1:
            raise ValueError(f"rows must be >= 1, got {rows}")
        self.every_n_epochs, self.rows, self.dirpath = every_n_epochs, rows, dirpath
        self._chunk: tuple[Tensor, Tensor] | None = None
        self.last_norms: Tensor | None = None
        self.last_path: Path | None = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, batch_idx: int
    ) -> None:
        if self._chunk is None:  # the same chunk every time, so the plots are comparable
            self._chunk = (
                batch["inputs"][: self.rows].clone(),
                batch["targets"][: self.rows, -1].clone(),
            )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._chunk is None or (trainer.current_epoch + 1) % self.every_n_epochs or not trainer.is_global_zero:
            return
        inputs, target = self._chunk
        keep = target != -100  # rows whose last step predicts something
        if not keep.any():
            return
        model = pl_module.model
        self.last_norms = hidden_gradient_norms(
            model, inputs[keep].to(pl_module.device), target[keep].to(pl_module.device)
        )
        name = f"{model.cell}, {model.num_layers}x{model.hidden_dim}"
        title = f"gradient flow after epoch {trainer.current_epoch} ({name})"
        directory = Path(self.dirpath or trainer.log_dir or trainer.default_root_dir)
        self.last_path = plot_gradient_flow(
            {name: self.last_norms},
            directory / f"gradient_flow_epoch{trainer.current_epoch}.png",
            title,
        )
        for logger in trainer.loggers:
            _log_image(logger, self.last_path, {name: self.last_norms}, title, trainer.global_step)


def _log_image(logger, path: Path, curves: dict[str, Tensor], title: str, step: int) -> None:
    """Send the plot to loggers that take images; the others are left alone."""
    if hasattr(logger, "log_image"):  # WandbLogger, NeptuneLogger, ...
        logger.log_image(key="gradient_flow", images=[str(path)], step=step)
    elif hasattr(getattr(logger, "experiment", None), "add_figure"):  # TensorBoard
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        logger.experiment.add_figure("gradient_flow", _figure(curves, title, plt), global_step=step, close=True)
