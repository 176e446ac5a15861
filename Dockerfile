# syntax=docker/dockerfile:1
# Any Avis service, named by the SERVICE build argument (PORT: the port it serves). Build from the
# repository root, which holds the uv workspace:
#   docker build --build-arg SERVICE=intake --build-arg PORT=8001 -t avis-intake .
# docker-compose.yml builds the four services and the web pages from this one file (web's
# templates, static files and catalogues travel inside its wheel, beside its code).
ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: resolve the locked environment of avis-${SERVICE} into /app/.venv -------------
FROM ${PYTHON_IMAGE} AS builder
ARG SERVICE
RUN test -n "${SERVICE}" || { echo "set --build-arg SERVICE=intake|review|reports|notify|web" >&2; exit 1; }
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
# The same uv as the Makefile, so the lock is read exactly as on a developer's machine.
RUN pip install uv==0.13.8
WORKDIR /src

# Every workspace member's metadata is needed for `--locked` to match uv.lock; sources are not,
# so third-party dependencies get a layer of their own that only a lock change invalidates.
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/
COPY services/intake/pyproject.toml services/intake/
COPY services/review/pyproject.toml services/review/
COPY services/reports/pyproject.toml services/reports/
COPY services/notify/pyproject.toml services/notify/
COPY services/web/pyproject.toml services/web/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --package avis-${SERVICE} --no-install-workspace

# Then the two workspace members this image runs, installed as wheels (no editable links to /src).
COPY shared/ shared/
COPY services/${SERVICE}/ services/${SERVICE}/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --package avis-${SERVICE}

# ---- runtime: the interpreter and the environment, nothing else --------------------------------
# Same base as the builder: the venv's interpreter link points at /usr/local/bin/python3.11.
FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE
ARG PORT=8000
RUN groupadd --system --gid 10001 avis \
    && useradd --system --uid 10001 --gid avis --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin avis
# Owned by root and read-only to the service user: the running process cannot alter its code.
COPY --from=builder /app/.venv /app/.venv
# In a container a service listens on every address; each reads only its own AVIS_<NAME>_*.
ENV PATH=/app/.venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AVIS_SERVICE=${SERVICE} \
    AVIS_SERVICE_PORT=${PORT} \
    AVIS_INTAKE_HTTP_HOST=0.0.0.0 \
    AVIS_REVIEW_HTTP_HOST=0.0.0.0 \
    AVIS_REPORTS_HTTP_HOST=0.0.0.0 \
    AVIS_NOTIFY_HTTP_HOST=0.0.0.0 \
    AVIS_WEB_HTTP_HOST=0.0.0.0
WORKDIR /app
USER 10001:10001
EXPOSE ${PORT}
# slim has no curl: ask /healthz with the standard library; any error or non-2xx exits non-zero.
# The service's own AVIS_<NAME>_HTTP_PORT wins over the port the image was built for.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; s = os.environ['AVIS_SERVICE']; port = os.environ.get(f'AVIS_{s.upper()}_HTTP_PORT', os.environ['AVIS_SERVICE_PORT']); urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2)"]
# exec: the service's console script replaces the shell, so signals reach uvicorn.
CMD ["sh", "-c", "exec avis-\"$AVIS_SERVICE\""]
