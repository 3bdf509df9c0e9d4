"""The browser console: server-rendered pages of jobs, batches, gate runs and usage (app/console/views.py)."""
