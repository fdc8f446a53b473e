# minipacs image: the same code as ./run.sh, settings by MINIPACS_ environment variables.
# Build: docker build -t minipacs .   Run with MinIO and PostgreSQL: docker compose up -d
FROM python:3.11-slim-bookworm

# dcmtk is not needed at run time; libjpeg/openjpeg codecs come as pylibjpeg wheels.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    MINIPACS_DATA_DIR=/var/lib/minipacs \
    MINIPACS_HTTP_HOST=0.0.0.0 \
    MINIPACS_DICOM_HOST=0.0.0.0 \
    MINIPACS_LOAD_SAMPLES=false

RUN useradd --system --uid 10001 --home-dir /var/lib/minipacs minipacs \
    && mkdir -p /var/lib/minipacs && chown minipacs /var/lib/minipacs

WORKDIR /opt/minipacs
# The whole checkout (minus .dockerignore): src/, viewer/ and the migrations; installed
# editable so the viewer and sample folders resolve next to the code, as with ./run.sh.
COPY . .
RUN pip install --no-compile -e .

USER minipacs
VOLUME /var/lib/minipacs
EXPOSE 11112 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"
# Applies pending index migrations, then serves DICOM on 11112 and HTTP on 8080.
CMD ["minipacs", "serve"]
