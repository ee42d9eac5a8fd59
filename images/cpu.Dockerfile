# CPU image for the data steps (fetch, validate, normalize, build-dataset, publish) and merge-lora.
# Build: make build-images IMAGES=cpu [ENGINE=podman] [BUILD_ARGS='--build-arg NAME=VALUE ...'] (images/build.py
# stages a context of requirements/, pyproject.toml, README.md, fish_speech/). Air-gapped: images/airgap.sh.

# The official Python image, pinned by digest; a mirror's copy or a debootstrapped stand-in works too
# (anything with python3 >= 3.11 and its venv module, useradd, CA certificates).
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b
FROM ${BASE_IMAGE}

# PyPI or its mirror, and where torch 2.13.0+cpu lives (PyTorch's CPU index or a mirror of it).
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# HOME and the caches are group-0 writable: the image runs as UID 1000 and as any UID in group 0 (OpenShift).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/fish \
    XDG_CACHE_HOME=/home/fish/.cache \
    MPLCONFIGDIR=/home/fish/.cache/matplotlib

# Exactly the tested versions, each checked against its hash (requirements/cpu.lock, made by make locks).
WORKDIR /opt/fish-speech
COPY requirements/cpu.lock requirements/
RUN python3 -m venv /opt/venv \
    && pip install --no-cache-dir --require-hashes --no-deps \
        --index-url "$PIP_INDEX_URL" --extra-index-url "$TORCH_INDEX_URL" -r requirements/cpu.lock

# The project itself (kfp came with the lock, so components never pip-install at run time:
# install_kfp_package=False). /minio, /s3 and /gcs: where KFP's launcher puts artifacts. Backends with
# kubeflow/pipelines#10538 mount an emptyDir there; older ones do not, so the image makes them writable.
COPY pyproject.toml README.md ./
COPY fish_speech ./fish_speech
RUN pip install --no-cache-dir --no-deps --no-build-isolation --no-index ./ \
    && pip check \
    && rm -rf build ./*.egg-info \
    && useradd --uid 1000 --gid 0 --home-dir /home/fish --create-home --shell /usr/sbin/nologin fish \
    && mkdir -p /home/fish/.cache/matplotlib /minio /s3 /gcs \
    && chown -R 1000:0 /home/fish && chmod -R g=u /home/fish \
    && chmod 1777 /minio /s3 /gcs
USER 1000
WORKDIR /home/fish
