# llmgateway: one process, gateway + keeper, embedded SQLite in /app/data by default.
#
#   docker build -t llmgateway .
#   docker run -p 55300:55300 -v ./config:/app/config -v ./keys:/app/keys \
#              -v llmgw-data:/app/data llmgateway
#
# BASE_IMAGE is any Debian-like image with Python 3.13 and its venv module as `python3`
# (the official slim image by default). PIP_INDEX_URL points pip at a package mirror
# for this build only; empty means pip's own default.
ARG BASE_IMAGE=python:3.13-slim

# -- build: a virtualenv with the production requirements and the package -----------------
FROM ${BASE_IMAGE} AS build
ARG PIP_INDEX_URL=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# binutils (build stage only) strips the debug symbols that the binary wheels ship.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends binutils \
    && python3 -m venv /opt/venv
# The hash-pinned export of poetry.lock: exactly the locked versions, no development tools.
COPY requirements.txt /src/
RUN /opt/venv/bin/pip install --require-hashes -r /src/requirements.txt
COPY pyproject.toml README.md /src/
COPY llmgateway /src/llmgateway
# The package alone on top, then pip itself goes (the image never installs anything later)
# and the compiled extensions lose their debug symbols (about two thirds of their size).
RUN /opt/venv/bin/pip install --no-deps /src \
    && /opt/venv/bin/pip uninstall --yes pip \
    && find /opt/venv -name '*.so' -exec strip --strip-unneeded {} +

# -- final: the base, a non-root user and the virtualenv, nothing else --------------------
FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# /app/data must exist, owned by the user, before VOLUME: a new named volume copies it.
RUN groupadd --gid 10001 llmgateway \
    && useradd --uid 10001 --gid llmgateway --home-dir /app --no-create-home --no-log-init \
       --shell /usr/sbin/nologin llmgateway \
    && mkdir -p /app/config /app/keys /app/data \
    && chown llmgateway:llmgateway /app/data

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
USER llmgateway
EXPOSE 55300
VOLUME ["/app/data"]

# /-/healthy answers 200 while the process serves, on the default port (after changing
# server.port, override the check: docker run --health-cmd ...).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:55300/-/healthy', timeout=4)"]

# Arguments after the image name replace `serve`: `docker run … llmgateway status`.
# Relative paths (config/providers.yaml, keys/<instance>/, data/llmgateway.db) start at /app.
ENTRYPOINT ["llmgateway"]
CMD ["serve"]
