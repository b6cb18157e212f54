# The stream-app worker image (used by docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream_app ./stream_app
RUN pip install --no-cache-dir . && useradd --system pulse
USER pulse
ENV PULSE_WEB_HOST=0.0.0.0 PULSE_WEB_PORT=6066
EXPOSE 6066
ENTRYPOINT ["stream-app"]
CMD ["worker"]
