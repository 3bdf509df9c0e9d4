"""The batch worker's entry module: `celery -A make_batch_celery worker -Q batches ...` (see Procfile).

Unlike make_celery it loads no model: it validates batch files, creates and enqueues their jobs,
and finalizes batches. It also runs the release gate that celery beat schedules (gate/tasks.py).
"""

import gate.tasks  # noqa: F401  (registers the scheduled release gate)
import workers.tasks  # noqa: F401  (registers the batch tasks)
from app import create_app

flask_app = create_app()
celery_app = flask_app.extensions["celery"]
