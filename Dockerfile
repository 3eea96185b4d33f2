# The service image: `rdisplay` with every dependency; compose.yaml runs it as worker (and edge).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY services services
COPY streams streams
COPY schemas schemas
COPY observability observability
RUN pip install --no-cache-dir . && useradd --system --uid 10001 rdisplay
USER rdisplay
ENV LOG_FORMAT=json
ENTRYPOINT ["rdisplay"]
CMD ["worker"]
