#!/bin/sh
# The image's entrypoint: ROLE [ARGS]. Each role is the Procfile's line for a container: it listens on
# every interface, so the API and Flower refuse to start without credentials. Anything else runs as
# given, e.g. `gptoss keys add alice` (docs/deploy.md).
#   api             migrations (alembic upgrade head), then gunicorn on $HOST:$PORT (0.0.0.0:8000)
#   worker PROFILE  the model worker of one profile (python -m workers.start PROFILE)
#   batches         the batch worker (ingest, finalize, the scheduled gate; no model)
#   beat            celery beat (reconciler, purge, gate schedule); run exactly one
#   flower          Flower on 0.0.0.0:$FLOWER_PORT, behind FLOWER_BASIC_AUTH
set -eu
role="${1:-api}"
[ $# -gt 0 ] && shift

case "$role" in
api)
    alembic upgrade head
    # gunicorn.conf.py would bind 127.0.0.1 without keys, unreachable from outside the container
    python - <<'PY'
import os
import sys

from app.keys.store import stored_keys_exist
from app.settings import load_settings, parse_api_keys

if not (parse_api_keys(os.environ.get("GPTOSS_API_KEYS")) or stored_keys_exist(load_settings().database_url)):
    sys.exit("entrypoint: the API serves other machines here and needs API keys: set GPTOSS_API_KEYS "
             "(deploy/.env) or add one with `docker compose run --rm api gptoss keys add NAME`")
PY
    exec gunicorn --bind "${HOST:-0.0.0.0}:${PORT:-8000}" \
        --access-logfile - 'app:create_app()'
    ;;
worker)
    exec python -m workers.start "$@"
    ;;
batches)
    exec python -m celery -A make_batch_celery worker -Q batches -P threads -c 4 -n batches@%h \
        --without-gossip --without-mingle --loglevel INFO
    ;;
beat)
    exec python -m celery -A make_batch_celery beat -s "${GPTOSS_DATA_DIR:-/data}/celerybeat-schedule" \
        --loglevel INFO
    ;;
flower)
    : "${FLOWER_BASIC_AUTH:?entrypoint: Flower serves other machines here: set FLOWER_BASIC_AUTH=user:password}"
    exec python -m celery -A make_celery flower --address=0.0.0.0 --port="${FLOWER_PORT:-5555}"
    ;;
*)
    exec "$role" "$@"
    ;;
esac
