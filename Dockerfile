# syntax=docker/dockerfile:1
# Production image: `ihanoi serve` over managed PostgreSQL and Redis (DATABASE_URL and REDIS_URL).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# the whole source (.dockerignore leaves out tests, benchmarks and local state): a new module needs no edit here
COPY . .
RUN python -m venv /opt/ihanoi && /opt/ihanoi/bin/pip install .

FROM python:3.11-slim AS runtime
ENV PATH=/opt/ihanoi/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    IHANOI_ENV=prod \
    IHANOI_HOST=0.0.0.0 \
    IHANOI_PORT=8000
RUN groupadd --system ihanoi && useradd --system --gid ihanoi --no-create-home --home-dir /nonexistent ihanoi
COPY --from=build /opt/ihanoi /opt/ihanoi
USER ihanoi
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
CMD ["ihanoi", "serve"]
