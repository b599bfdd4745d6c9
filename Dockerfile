# The operator image referenced by manifests/ and charts/ (build where Docker exists:
#   docker build -t ghcr.io/headroom-dev/headroom:0.1.0 .)
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir . && rm -rf /root/.cache
USER 65532:65532
ENTRYPOINT ["headroom"]
CMD ["run"]
