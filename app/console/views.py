"""The console's pages under /console: sign-in, overview, jobs, batches and the release gate's runs.

Every page reads through the stores the API answers from, narrowed by the caller's `sees`, so a key
sees here what it would see with curl. Cancels take the jobs' and batches' one cancel path. The pages
are whole without JavaScript; static/console.js adds the live parts (a job's SSE, batches' counts).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from flask import Blueprint, Response, redirect, render_template, request, url_for
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from werkzeug.wrappers import Response as BaseResponse

from app.auth import CONSOLE, CONSOLE_COOKIE, is_local
from app.batches import store as batch_store
from app.batches.views import batch_json, cancel_and_watch
from app.console import csrf
from app.console.overview import profile_overviews, usage_rows
from app.db import db_session
from app.errors import ApiError, validation_error
from app.gate_runs import store as gate_store
from app.jobs import store as job_store
from app.jobs.cancel import cancel
from app.jobs.render import job_json
from app.keys import store as key_store
from app.keys.caller import current_caller
from app.models import JobStatus
from app.ops.usage_views import chosen_key
from app.services import services

bp = Blueprint(CONSOLE, __name__, url_prefix="/console", template_folder="templates", static_folder="static")
bp.before_request(csrf.check_csrf)
bp.after_request(csrf.remember_csrf_token)

PAGE_SIZE = 25
GATE_PAGE_SIZE = 10
WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}
PROBLEMS = {
    "missing_api_key": "Sign in with an API key to see this console.",
    "invalid_api_key": "That key was not accepted: it is unknown or revoked.",
    "api_keys_not_configured": "This server has no API keys and serves its own machine only.",
}


class JobFilter(BaseModel):
    """The jobs page's filters (its form's fields; an empty field is no filter)."""

    model_config = ConfigDict(extra="ignore")

    status: JobStatus | None = None
    profile: str | None = None
    key: str | None = None  # a key's name or id: admins only
    since: Literal["1h", "24h", "7d"] | None = None
    after: str | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return value or None

    def started(self) -> datetime | None:
        return datetime.now(UTC) - WINDOWS[self.since] if self.since else None


@bp.errorhandler(ApiError)
def error_page(exc: ApiError) -> tuple[str, int]:
    return render_template("console/error.html", error=exc), exc.status


@bp.errorhandler(ValidationError)
def invalid_page(exc: ValidationError) -> tuple[str, int]:
    return error_page(validation_error(exc))


@bp.context_processor
def page_context() -> dict[str, Any]:
    return {
        "csrf_field": csrf.CSRF_FIELD,
        "csrf_token": csrf.csrf_token,
        "signed_in": CONSOLE_COOKIE in request.cookies,
    }


@bp.app_template_filter("when")
def when(unix: float | None) -> str:
    return "—" if unix is None else datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@bp.app_template_filter("seconds")
def seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f} s"


@bp.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse | tuple[str, int]:
    """Ask for an API key once; keep it in this browser's cookie."""
    keys, problem = services().keys, request.args.get("problem")
    if not keys.required():
        if is_local(request.remote_addr):
            return redirect(url_for(".overview"))
        problem = "api_keys_not_configured"
    elif request.method == "POST":
        key = request.form.get("key", "").strip()
        if key and keys.caller_of(key) is not None:
            response = redirect(safe_next(request.form.get("next")))
            csrf.set_console_cookie(response, CONSOLE_COOKIE, key, csrf.KEY_COOKIE_MAX_AGE_S)
            return response
        problem = "invalid_api_key"
    message = PROBLEMS.get(problem or "")
    page = render_template("console/login.html", message=message, next=request.values.get("next"))
    return page, 401 if message else 200


def safe_next(path: str | None) -> str:
    """Where to go after signing in: a console page of this site, never elsewhere."""
    if path and path.startswith("/console") and not path.startswith("/console/login"):
        return path
    return url_for(".overview")


@bp.post("/logout")
def logout() -> BaseResponse:
    """Forget the key this browser holds."""
    response = redirect(url_for(".login"))
    csrf.set_console_cookie(response, CONSOLE_COOKIE, "", 0)
    return response


@bp.get("/")
def overview() -> str:
    """Per profile: workers, queue depth, last hour's latencies; then tokens per key per day."""
    caller = current_caller()
    with db_session() as session:
        profiles, usage = profile_overviews(session, caller), usage_rows(session, caller)
    return render_template("console/overview.html", profiles=profiles, usage=usage)


@bp.get("/jobs")
def jobs() -> str:
    """Jobs newest first, filtered by status, profile, key (admins) and age; paged."""
    query, caller = JobFilter.model_validate(request.args.to_dict()), current_caller()
    with db_session() as session:
        names = key_store.key_directory(session, services().settings.reliability.api_keys)
        owner = chosen_key(query.key, caller, names) if caller.admin else None
        found, has_more = job_store.list_jobs(
            session, caller, status=query.status, profile=query.profile, after=query.after,
            limit=PAGE_SIZE, owner=owner, since=query.started(),
        )  # fmt: skip
        rows = [job_json(job) | {"owner": names.get(job.owner or "", job.owner)} for job in found]
    filters = query.model_dump(mode="json", exclude={"after"}, exclude_none=True)
    next_page = url_for(".jobs", **filters, after=rows[-1]["id"]) if has_more else None
    newest = url_for(".jobs", **filters) if query.after else None
    return render_template(
        "console/jobs.html", jobs=rows, query=query, next_page=next_page, newest=newest,
        statuses=list(JobStatus), profiles=list(services().profiles), windows=list(WINDOWS),
        keys=sorted(names.values()) if caller.admin else None,
    )  # fmt: skip


@bp.get("/jobs/<job_id>")
def job(job_id: str) -> str:
    """One job: its answer (live while it runs), reasoning apart, tags, timings, quality, cancel."""
    with db_session() as session:
        found = job_json(job_store.get_job_or_404(session, job_id, current_caller()))
    return render_template("console/job.html", job=found)


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> BaseResponse:
    """Cancel through the jobs' one cancel path; a job that already ended just shows its end."""
    caller = current_caller()
    with db_session() as session:
        unless_ended(lambda: cancel(session, job_id, caller))
    return redirect(url_for(".job", job_id=job_id))


@bp.get("/batches")
def batches() -> str:
    """Batches newest first with their progress (live with JavaScript); paged."""
    after = request.args.get("after") or None
    with db_session() as session:
        found, has_more = batch_store.list_batches(session, current_caller(), after=after, limit=PAGE_SIZE)
        counts = batch_store.live_request_counts(session, found)
        rows = [batch_json(batch, counts[batch.id]) for batch in found]
    next_page = url_for(".batches", after=rows[-1]["id"]) if has_more else None
    return render_template("console/batches.html", batches=rows, next_page=next_page)


@bp.get("/batches/<batch_id>")
def batch(batch_id: str) -> str:
    """One batch: progress, its files, cancel."""
    with db_session() as session:
        found = batch_store.get_batch_or_404(session, batch_id, current_caller())
        shown = batch_json(found, batch_store.live_request_counts(session, [found])[found.id])
    return render_template("console/batch.html", batch=shown)


@bp.post("/batches/<batch_id>/cancel")
def cancel_batch(batch_id: str) -> BaseResponse:
    """Cancel through the batches' one cancel path; one that already ended just shows its end."""
    caller = current_caller()
    unless_ended(lambda: cancel_and_watch(batch_id, caller))
    return redirect(url_for(".batch", batch_id=batch_id))


def unless_ended(cancel_it: Callable[[], object]) -> None:
    """Cancel; a job or batch that already ended (the cancel path's 409) just shows its end."""
    try:
        cancel_it()
    except ApiError as exc:
        if exc.status != 409:
            raise


@bp.get("/gate")
def gate() -> str:
    """The release gate's stored runs, newest first: verdict, figures, failures, latency plot."""
    after = request.args.get("after") or None
    with db_session() as session:
        runs, has_more = gate_store.list_gate_runs(session, profile=None, after=after, limit=GATE_PAGE_SIZE)
        rows = [gate_store.gate_run_json(run) for run in runs]
    next_page = url_for(".gate", after=rows[-1]["id"]) if has_more else None
    return render_template("console/gate.html", runs=rows, next_page=next_page)


def page_headers(response: Response) -> Response:
    """Pages show live state and a caller's own things: never from a shared cache. They load only this
    site's script, style and images, and no other site may frame them (a Cancel button under a decoy)."""
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response


bp.after_request(page_headers)
