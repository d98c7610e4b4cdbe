# dockdoc watch as a container. See docs/watch.md ("Deployment") for the full story.
#
#   docker build -t dockdoc .                                   # where a registry is reachable
#   docker run -d --name dockdoc --restart unless-stopped --pid=host \
#     -v /var/run/docker.sock:/var/run/docker.sock:ro -v dockdoc-state:/var/lib/dockdoc \
#     -e DOCKDOC_WEBHOOK_SECRET -p 127.0.0.1:9464:9464 \
#     dockdoc --metrics-addr 0.0.0.0:9464 --post https://hooks.example/dockdoc
# (arguments replace CMD: keep --metrics-addr, the HEALTHCHECK asks /healthz there)
#
# The base image is a build argument: any image with Python >= 3.10 will do. Without a registry
# (as in dockdoc's own CI), import a Debian root filesystem with `docker import`, put the wheels in
# ./wheelhouse (`pip wheel -w wheelhouse .`) and build with
#   docker build --build-arg BASE_IMAGE=dockdoc-test/debian-apps:1 -t dockdoc .
# A base without pip gets the wheels unpacked (they are plain zip files); one with pip installs them.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
# Only /opt/dockdoc leaves this stage, so copying the whole context costs the final image nothing.
COPY . /src
RUN set -eu; \
    if ls /src/wheelhouse/*.whl >/dev/null 2>&1; then \
        if python3 -m pip --version >/dev/null 2>&1; then \
            python3 -m pip install --no-cache-dir --no-index --find-links /src/wheelhouse --target /opt/dockdoc dockdoc; \
        else \
            for wheel in /src/wheelhouse/*.whl; do python3 -m zipfile -e "$wheel" /opt/dockdoc; done; \
        fi; \
    else \
        python3 -m pip install --no-cache-dir --target /opt/dockdoc /src; \
    fi; \
    PYTHONPATH=/opt/dockdoc python3 -c "import doctor.watch, doctor.metrics, doctor.rules"

FROM ${BASE_IMAGE}
COPY --from=build /opt/dockdoc /opt/dockdoc
ENV PYTHONPATH=/opt/dockdoc \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DOCKDOC_STATE=/var/lib/dockdoc/state.db
RUN mkdir -p /var/lib/dockdoc && chmod 700 /var/lib/dockdoc
VOLUME ["/var/lib/dockdoc"]
EXPOSE 9464
# /healthz answers while the watch loop turns (see --metrics-addr in CMD).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4)"]
# SIGTERM (docker stop) finishes the delivery in flight, flushes the store and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python3", "-m", "doctor", "watch"]
CMD ["--metrics-addr", "0.0.0.0:9464", "--log-format", "json"]
