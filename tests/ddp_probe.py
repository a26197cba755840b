"""A callback the DDP test adds on the command line: each process writes the pairs it trained on."""

from __future__ import annotations

import json
import os

import lightning as L


class RecordShards(L.Callback):
    """Appends ``[epoch, image index, caption ids]`` of every training pair to ``$SHARD_DIR/rank<N>.jsonl``."""

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, batch_idx: int
    ) -> None:
        rows = [
            [trainer.current_epoch, index, tokens[:length]]
            for index, tokens, length in zip(
                batch["index"].tolist(), batch["tokens"].tolist(), batch["lengths"].tolist(), strict=True
            )
        ]
        with open(os.path.join(os.environ["SHARD_DIR"], f"rank{trainer.global_rank}.jsonl"), "a") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
