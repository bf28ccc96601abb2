# pgcast server image: `docker compose up` builds it (see docker-compose.yml).
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY cdc ./cdc
COPY broadcaster ./broadcaster
COPY migrations ./migrations
RUN pip install --no-cache-dir . && useradd --system --no-create-home pgcast

USER pgcast
EXPOSE 4000
ENV PGCAST_HOST=0.0.0.0 PGCAST_PORT=4000
# Migrate (idempotent, advisory-locked), capture the demo table, serve it with the demo page at /
# (a local stack: drop --demo-page, which hands out a development token, anywhere else).
CMD ["sh", "-c", "pgcast migrate && pgcast tables add public.messages && exec pgcast serve --demo-page"]
