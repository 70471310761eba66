"""Celery workers that run pruning jobs (``worker.tasks``) and keep the queue healthy (``worker.reaper``)."""
