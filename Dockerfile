# Threadline service image: non-root, tokenizer data inside the image (no download at run time).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY core ./core
COPY bots ./bots
COPY migrations ./migrations
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 DATABASE_URL=sqlite:////data/threadline.db
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --home /data threadline && mkdir -p /data && chown threadline /data
# Fail the build if the offline tokenizer data is missing.
RUN python -c "from core.tokens import count_tokens; assert count_tokens('hello world', 'gpt-4o') == 2"
USER threadline
WORKDIR /data
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:3000/healthz', timeout=2)" || exit 1
CMD ["threadline", "run"]
