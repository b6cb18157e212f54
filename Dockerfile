# The stream-app worker image (used by docker-compose.yml and deploy/kubernetes).
FROM python:3.11.10-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream_app ./stream_app
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --no-create-home pulse \
    && mkdir -p /var/lib/pulse && chown pulse /var/lib/pulse
USER 10001
# The worker's local files live in the data directory, never in the (root-owned) /app.
ENV PULSE_WEB_HOST=0.0.0.0 PULSE_WEB_PORT=6066 PULSE_DATA_DIR=/var/lib/pulse
VOLUME /var/lib/pulse
EXPOSE 6066
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:6066/livez', timeout=4)"]
ENTRYPOINT ["stream-app"]
CMD ["worker"]
