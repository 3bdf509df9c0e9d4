"""The Celery worker's entry module: `celery -A make_celery worker ...` (see workers/start.py)."""

from app import create_app
from workers.runtime import connect_worker_signals

flask_app = create_app()
celery_app = flask_app.extensions["celery"]
connect_worker_signals(flask_app)
