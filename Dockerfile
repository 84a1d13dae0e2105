# dotrio in a container: build the wheel (with its compiled kernels) in one
# stage, install it into a slim non-root runtime stage.
#
#   docker build -t dotrio .                              # serves examples/agents
#   docker build -t myapp --build-arg APP=path/to/app .   # a folder with your dotrio.toml
#   docker run -p 8787:8787 -v dotrio-data:/data myapp
#
# Objects' databases live in the /data volume (--data-dir overrides the
# config's data_dir). `docker stop` sends SIGTERM: dotrio stops accepting,
# lets in-flight requests finish (shutdown_grace, default 10 s), commits and
# exits 0; keep `docker stop -t` above that grace. Secrets: pass
# DOTRIO_VAR_<NAME> environment variables (docker run -e / --env-file),
# never bake a .dev.vars into the image (.dockerignore leaves it out).

ARG PYTHON=3.12

FROM python:${PYTHON}-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The dotrio wheel (Cython kernels compiled here) and wheels of its dependencies.
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
 && python -c "import glob, sys, zipfile; w = glob.glob('/wheels/dotrio-*.whl')[0]; \
names = zipfile.ZipFile(w).namelist(); \
sys.exit(0 if any(n.endswith('.so') for n in names) else 'the dotrio wheel has no compiled kernels')"

FROM python:${PYTHON}-slim
ARG APP=examples/agents
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels dotrio \
 && rm -rf /wheels \
 && useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin dotrio \
 && mkdir -p /data \
 && chown dotrio:dotrio /data
# The app's code is read-only for the server's user; only /data is written.
COPY ${APP} /app
WORKDIR /app
VOLUME ["/data"]
USER dotrio
EXPOSE 8787
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=3s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8787/_dotrio/health', timeout=2)"
# Exec form: dotrio is PID 1 and receives SIGTERM itself.
ENTRYPOINT ["dotrio", "serve", "--host", "0.0.0.0", "--port", "8787", "--data-dir", "/data"]
CMD []
