# One image for every IonVeil worker: `ionveil worker <name>` (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md subjects.yaml ./
COPY ionveil ./ionveil
COPY services ./services
COPY workers ./workers
COPY shared ./shared
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app ionveil \
    && mkdir -p /tmp/ionveil && chown ionveil /tmp/ionveil

USER ionveil
ENV IONVEIL_HTTP_HOST=0.0.0.0 \
    IONVEIL_LOG_FORMAT=json \
    IONVEIL_DATA_DIR=/tmp/ionveil \
    IONVEIL_SUBJECTS_FILE=/app/subjects.yaml

ENTRYPOINT ["ionveil"]
CMD ["worker", "policy"]
