# CPU image for the data steps (fetch, validate, normalize, build-dataset, publish).
# Build with `make build-images` (images/build.py stages a context of pyproject.toml, README.md, fish_speech/).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The CPU build of torch first and pinned: a plain `pip install torch` pulls the multi-GB CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

WORKDIR /opt/fish-speech
COPY pyproject.toml README.md ./
COPY fish_speech ./fish_speech
# kfp is installed here so components never pip-install at run time (install_kfp_package=False).
RUN pip install "./[pipeline]" \
    && useradd --create-home --uid 1000 --shell /usr/sbin/nologin fish
USER 1000
WORKDIR /home/fish
ENV HOME=/home/fish
