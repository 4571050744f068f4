# One image for every ColdTrail service; the compose file picks the subcommand.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY coldtrail ./coldtrail
COPY edge ./edge
COPY ingest ./ingest
COPY rules ./rules
COPY api ./api
COPY console ./console
COPY validation ./validation
COPY erp ./erp
COPY dashboards ./dashboards
COPY firmware-sim ./firmware-sim
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
# Not root: a service has no business writing outside its volumes.
RUN useradd --system --uid 10001 --home-dir /var/lib/coldtrail --create-home coldtrail
USER coldtrail
WORKDIR /var/lib/coldtrail
ENV PYTHONUNBUFFERED=1 COLDTRAIL_LOG_FORMAT=json
ENTRYPOINT ["coldtrail"]
CMD ["--help"]
