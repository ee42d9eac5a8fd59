# GPU image for extract-vq and lora-train (and merge-lora with --merge-on-gpu): torch 2.13.0 built for CUDA
# (TORCH_CUDA, default cu130).
# Build: make build-images IMAGES=gpu [ENGINE=podman] [BUILD_ARGS='--build-arg NAME=VALUE ...'] (images/build.py
# stages a context of requirements/, pyproject.toml, README.md, fish_speech/). Air-gapped: images/airgap.sh.

# The official Python image, pinned by digest; a mirror's copy or a debootstrapped stand-in works too
# (anything with python3 >= 3.11 and its venv module, useradd, CA certificates).
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b
FROM ${BASE_IMAGE}

# The CUDA build of torch that requirements/gpu.lock pins: PyPI's torch 2.13.0 is the CUDA 13.0 build
# (cu130); images/torch-builds.json lists the builds torch 2.13.0 publishes (cu126 for older GPUs and
# drivers: README > Images). TORCH_INDEX_URL: an extra index the lock's torch comes from (empty: PyPI).
ARG TORCH_CUDA=cu130
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG TORCH_INDEX_URL=

# HOME and the caches are group-0 writable: the image runs as UID 1000 and as any UID in group 0 (OpenShift).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/fish \
    XDG_CACHE_HOME=/home/fish/.cache \
    MPLCONFIGDIR=/home/fish/.cache/matplotlib

# Exactly the tested versions, each checked against its hash (requirements/gpu.lock, made by make locks);
# the build fails when the installed torch is not the TORCH_CUDA build. The CUDA runtime comes with the
# wheels (cuda-toolkit, nvidia-*); the node supplies the driver, and the device plugin the devices.
WORKDIR /opt/fish-speech
COPY requirements/gpu.lock requirements/
RUN python3 -m venv /opt/venv \
    && pip install --no-cache-dir --require-hashes --no-deps \
        --index-url "$PIP_INDEX_URL" ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -r requirements/gpu.lock \
    && python -c 'import sys, torch; built = "cu" + (torch.version.cuda or "").replace(".", ""); \
sys.exit(None if built == sys.argv[1] else f"torch {torch.__version__} is the {built} build, TORCH_CUDA={sys.argv[1]}: regenerate requirements/gpu.lock (README > Images)")' "$TORCH_CUDA"

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
