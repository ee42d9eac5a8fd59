# GPU image for extract-vq, lora-train and merge-lora: the CUDA build of torch 2.13.0.
# The CUDA runtime libraries come with the torch wheel (nvidia-* packages); the node supplies the driver.
# Build with `make build-images` (images/build.py stages a context of pyproject.toml, README.md, fish_speech/).
FROM python:3.11-slim-bookworm

# The PyTorch wheel index of the CUDA version to build against (cu126, cu128, ...).
ARG TORCH_CUDA=cu128

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" torch==2.13.0

WORKDIR /opt/fish-speech
COPY pyproject.toml README.md ./
COPY fish_speech ./fish_speech
# kfp is installed here so components never pip-install at run time (install_kfp_package=False).
RUN pip install "./[pipeline]" \
    && useradd --create-home --uid 1000 --shell /usr/sbin/nologin fish
USER 1000
WORKDIR /home/fish
ENV HOME=/home/fish
