# llmgateway: one process, gateway + keeper, embedded SQLite by default.
#
#   docker build -t llmgateway .
#   docker run -v ./config:/app/config -v ./keys:/app/keys -p 55300:55300 llmgateway
#
# The install steps are the README's, production dependencies only:
# the hash-pinned export of poetry.lock, then the package without dependencies.
# tests/e2e/test_docker_steps.py runs these COPY and `pip install` lines in a clean
# virtualenv and starts `llmgateway serve` from it.
FROM python:3.13-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 llmgateway \
    && useradd --system --uid 10001 --gid llmgateway --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin llmgateway

WORKDIR /app

COPY requirements.txt ./
RUN pip install --require-hashes -r requirements.txt

COPY pyproject.toml README.md ./
COPY llmgateway ./llmgateway
COPY sql ./sql
RUN pip install --no-deps . && rm -rf build

RUN mkdir -p /app/data /app/keys /app/config \
    && chown llmgateway:llmgateway /app/data /app/keys

USER llmgateway

EXPOSE 55300
VOLUME ["/app/data", "/app/keys"]

# config/providers.yaml (relative to /app) is read by default; mount ./config at /app/config.
CMD ["llmgateway", "serve"]
