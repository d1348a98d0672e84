# syntax=docker/dockerfile:1
# The imagine server. Build: `docker build -t imagine .`; run a fleet: compose.yaml and
# docs/deploy.md. One image serves every role: `serve`, `worker`, `db upgrade`, `keys ...`.

# The Python the test suite and mypy target (pyproject: requires-python >=3.11).
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS builder

# The uv of the Makefile (UV_VERSION), so the image installs exactly what uv.lock says.
ARG UV_VERSION=0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir "uv==${UV_VERSION}"

WORKDIR /src
# Dependencies before the code: a change in src/ reuses this layer.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --extra postgres --extra redis --no-install-project
COPY README.md ./
COPY src ./src
# --no-editable: the venv holds the package itself, so the runtime stage needs no source tree.
RUN uv sync --frozen --no-dev --extra postgres --extra redis --no-editable

FROM python:${PYTHON_VERSION}-slim AS runtime

# A fixed uid, so a volume's owner is the same on every host.
RUN groupadd --system --gid 10001 imagine \
    && useradd --system --uid 10001 --gid imagine --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin imagine \
    && mkdir /data \
    && chown imagine:imagine /data

# Only the virtual environment travels: no uv, no pip cache, no compilers, no source.
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    IMAGINE_DATA_DIR=/data

VOLUME ["/data"]
WORKDIR /data
USER 10001:10001
EXPOSE 8000

# slim has no curl: Python's urllib asks /healthz (it raises, so exits 1, on anything but 2xx).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

ENTRYPOINT ["imagine"]
CMD ["serve", "--host", "0.0.0.0"]
