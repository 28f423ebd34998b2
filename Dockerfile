# One image for the API, the workers and `distillery models`. Build with --build-arg TORCH_INDEX to pick a
# CUDA build of torch for GPU workers (the default is the CPU build, from PyTorch's CPU index).
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1
WORKDIR /srv/distillery
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --index-url ${TORCH_INDEX} torch==2.13.0 || pip install torch==2.13.0
COPY pyproject.toml README.md alembic.ini ./
COPY client ./client
COPY app ./app
COPY worker ./worker
COPY contract ./contract
COPY cli ./cli
COPY migrations ./migrations
# The client is its own distribution, and the server requires it: one resolve takes it from ./client.
RUN pip install ./client ".[train]"
# /data and /models belong to the user, so named volumes mounted there start writable by it.
RUN useradd --create-home distillery && mkdir -p /data /models && chown distillery /data /models
USER distillery
ENV DISTILLERY_DATA_DIR=/data
EXPOSE 8000
CMD ["distillery", "serve", "--host", "0.0.0.0", "--port", "8000"]
