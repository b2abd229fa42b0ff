# One image for every zonepurge process (worker, sandbox, and later the ingest).
FROM python:3.12-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY zonepurge ./zonepurge
COPY producer ./producer
COPY worker ./worker
COPY ingest ./ingest
RUN pip install --no-cache-dir . && useradd --create-home zonepurge
USER zonepurge
ENTRYPOINT ["zonepurge"]
