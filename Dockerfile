# The service image: `rdisplay` with every dependency. compose.yaml runs it as `edge` and as
# `worker`; `docker run IMAGE serve` would need a writable DATA_DIR volume.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

# Dependencies first, from pyproject.toml alone: a change to the source reuses this layer.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY services services
COPY streams streams
COPY schemas schemas
COPY observability observability
RUN pip install --no-deps . \
    && rm -rf build *.egg-info \
    && groupadd --system --gid 10001 rdisplay \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin rdisplay

# Numeric, so that a runtime enforcing non-root (Kubernetes runAsNonRoot) can verify it.
USER 10001:10001
ENV LOG_FORMAT=json
EXPOSE 3001
ENTRYPOINT ["rdisplay"]
CMD ["worker"]
