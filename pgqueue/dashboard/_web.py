"""The dashboard's ASGI application: routes, pages and actions (Starlette, Jinja2 with
autoescape). Pages are GET; every action is a POST that needs authentication, the form's
CSRF token and, for what cannot be undone, a confirmation step; ``read_only`` refuses them."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pgqueue.app import App
from pgqueue.dashboard._data import COUNT_CAP, MEAN_SAMPLE, PAGE_SIZE, RETRY_BATCH, Reader
from pgqueue.dashboard._format import FILTERS, Figure, scrub
from pgqueue.dashboard._input import (
    Filters,
    parse_age_or_time,
    parse_cursor,
    parse_filters,
    parse_id,
    parse_ids,
)
from pgqueue.dashboard._security import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    AuthCallable,
    Guard,
    new_csrf_cookie,
    security_headers,
)
from pgqueue.errors import DatabaseError, JobNotFoundError, PgQueueError, ValidationError

__all__ = ["Dashboard"]

log = logging.getLogger("pgqueue.dashboard")

LIVE_STATES = ("waiting", "scheduled", "running")
HISTORY_STATES = ("succeeded", "cancelled")
_NO_STATES: tuple[str, ...] = ()

#: what a finished action reports on the page it returns to (``?done=CODE&n=N``)
_DONE = {
    "paused": "Queue paused.", "resumed": "Queue resumed.",
    "cancelled": "Cancelled: a waiting job went to the history; a running one was asked to stop.",
    "not-live": "Nothing to cancel: the job is no longer waiting or running.",
    "retried": "{n} job(s) moved back to waiting.",
    "retried-more": "{n} job(s) moved back to waiting; more match: run it again.",
    "purged": "{n} archived job(s) purged.",
    "schedule-paused": "Schedule paused.", "schedule-resumed": "Schedule resumed.",
    "schedule-ran": "Job {n} enqueued from the schedule.",
}

Handler = Callable[[Request], Awaitable[Response]]


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Dashboard:
    """One dashboard over one App (see :func:`pgqueue.dashboard.asgi_app`)."""

    def __init__(self, app: App, *, auth: str | AuthCallable | None, read_only: bool = False,
                 refresh_s: float = 5.0, stale_after_s: float = 60.0,
                 count_cap: int = COUNT_CAP) -> None:
        if not refresh_s > 0 or not stale_after_s > 0:
            raise ValidationError("refresh_s and stale_after_s must be positive seconds")
        if isinstance(count_cap, bool) or not isinstance(count_cap, int) or count_cap < 1:
            raise ValidationError(f"count_cap must be a whole number of rows, at least 1 "
                                  f"(default {COUNT_CAP:,}), not {count_cap!r}")
        self.app = app
        self.reader = Reader(app, count_cap)
        self.guard = Guard(auth)
        self.read_only = read_only
        self.refresh_s = refresh_s
        self.stale_after_s = stale_after_s
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("pgqueue.dashboard", "templates"),
            autoescape=True, trim_blocks=True, lstrip_blocks=True)
        self.env.filters.update(FILTERS)
        page, act = self._page, self._action
        self.routes = [
            Route("/", page(self.overview)),
            Route("/live/overview", page(self.overview_live)),
            Route("/jobs", page(self.jobs)),
            Route("/jobs/{job_id}", page(self.job)),
            Route("/failed", page(self.failed)),
            Route("/history", page(self.history)),
            Route("/workers", page(self.workers)),
            Route("/schedules", page(self.schedules)),
            Route("/limits", page(self.limits)),
            Route("/login", self.login, methods=["GET", "POST"]),
            Route("/queues/{action:str}", act(self.queue_action), methods=["POST"]),
            Route("/jobs/{job_id}/cancel", act(self.cancel), methods=["POST"]),
            Route("/failed/{action:str}", act(self.failed_action), methods=["POST"]),
            Route("/schedules/{action:str}", act(self.schedule_action), methods=["POST"]),
            Mount("/static", StaticFiles(packages=[("pgqueue.dashboard", "static")]),
                  name="static"),
        ]

    def asgi(self) -> Starlette:
        return Starlette(routes=self.routes, lifespan=self._lifespan)

    @contextlib.asynccontextmanager
    async def _lifespan(self, _: Starlette) -> AsyncIterator[None]:
        """Served on its own (not mounted: a mount passes no lifespan on), the dashboard
        closes the App's pools of its event loop when the server stops."""
        yield
        await self.app.aclose()

    # ---- rendering -----------------------------------------------------------------------
    @staticmethod
    def base(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def render(self, request: Request, template: str, status: int = 200,
               **context: Any) -> HTMLResponse:
        base = self.base(request)
        csrf_cookie = request.cookies.get(CSRF_COOKIE) or new_csrf_cookie()

        def link(path: str, **params: Any) -> str:
            query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
            return base + path + ("?" + query if query else "")

        done = request.query_params.get("done")
        flash = _DONE.get(done or "", "").format(n=request.query_params.get("n", "")[:20])
        html = self.env.get_template(template).render(
            base=base, link=link, read_only=self.read_only, refresh_s=self.refresh_s,
            csrf=self.guard.csrf_for(csrf_cookie), flash=flash, path=request.url.path,
            schema=self.app.schema, page_size=PAGE_SIZE, **context)
        response = HTMLResponse(html, status_code=status)
        if CSRF_COOKIE not in request.cookies:
            response.set_cookie(CSRF_COOKIE, csrf_cookie, httponly=True, samesite="strict",
                                path=base or "/")
        return security_headers(response)

    def problem(self, request: Request, status: int, message: str) -> HTMLResponse:
        return self.render(request, "problem.html", status, message=scrub(message),
                           title={400: "Bad request", 401: "Sign in", 403: "Refused",
                                  404: "Not found", 503: "Database unavailable"}.get(
                                      status, "Error"))

    def _page(self, handler: Handler) -> Handler:
        """A GET page: authenticated (a ``?token=`` is exchanged for the cookie), and every
        refusal or error shown as a page with a message, never a traceback."""
        async def endpoint(request: Request) -> Response:
            token = request.query_params.get("token")
            if token is not None and self.guard.uses_token:
                return self._sign_in(request, token)
            if not await self.guard.allowed(request):
                return self._unauthorised(request)
            return await self._safely(request, handler)
        return endpoint

    def _action(self, handler: Handler) -> Handler:
        """A POST action: authenticated (401), refused in read-only mode (403), the CSRF token
        checked (403); then done, or first confirmed where the handler asks for it."""
        async def endpoint(request: Request) -> Response:
            if not await self.guard.allowed(request):
                return security_headers(Response("not authenticated: sign in with the access "
                                                 "token", 401, media_type="text/plain"))
            if self.read_only:
                return self.problem(request, 403, "this dashboard is read-only: actions are "
                                    "turned off")
            try:
                form = await request.form()
            except Exception:  # a body that is no form at all
                return self.problem(request, 400, "the request is not a form")
            if not self.guard.csrf_ok(request, _str(form.get("csrf"))):
                return self.problem(request, 403, "the form's security token is missing or "
                                    "stale (CSRF check): reload the page and try again")
            request.state.form = form
            return await self._safely(request, handler)
        return endpoint

    async def _safely(self, request: Request, handler: Handler) -> Response:
        try:
            return await handler(request)
        except _Refused as exc:
            return self.problem(request, exc.status, exc.message)
        except JobNotFoundError as exc:
            return self.problem(request, 404, str(exc))
        except ValidationError as exc:
            return self.problem(request, 400, str(exc))
        except DatabaseError as exc:
            log.warning("dashboard: %s", scrub(str(exc)))
            return self.problem(request, 503, f"the database did not answer: {exc}")
        except PgQueueError as exc:
            return self.problem(request, 400, str(exc))
        except Exception:
            log.exception("dashboard: %s %s failed", request.method, request.url.path)
            return self.problem(request, 500, "something went wrong on the server; its log "
                                "has the details")

    def _unauthorised(self, request: Request) -> Response:
        if self.guard.uses_token:
            return self.render(request, "login.html", 401, next=request.url.path,
                               signed_out=True)
        return self.render(request, "problem.html", 401, title="Not allowed", signed_out=True,
                           message="you are not allowed to see this dashboard")

    def _sign_in(self, request: Request, token: str, next_path: str | None = None) -> Response:
        if not self.guard.token_matches(token):
            return self.render(request, "login.html", 401, next=next_path or request.url.path,
                               wrong=True, signed_out=True)
        base = self.base(request)
        target = next_path or request.url.path
        if not target.startswith(base + "/") or target.startswith("//"):
            target = base + "/"
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        if query and next_path is None:
            target += "?" + urlencode(query)
        response = RedirectResponse(target, 303)
        response.set_cookie(SESSION_COOKIE, self.guard.session_value(), httponly=True,
                            samesite="strict", path=base or "/")
        return security_headers(response)

    async def login(self, request: Request) -> Response:
        if request.method == "GET" or not self.guard.uses_token:
            if await self.guard.allowed(request):
                return RedirectResponse(self.base(request) + "/", 303)
            return self._unauthorised(request)
        form = await request.form()
        return self._sign_in(request, _str(form.get("token")) or "",
                             _str(form.get("next")) or self.base(request) + "/")

    def back(self, request: Request, path: str, done: str, **params: Any) -> Response:
        query = urlencode({"done": done, **{k: v for k, v in params.items() if v is not None}})
        return security_headers(RedirectResponse(f"{self.base(request)}{path}?{query}", 303))

    # ---- pages ---------------------------------------------------------------------------
    async def _overview_context(self) -> dict[str, Any]:
        stats = await self.reader.stats()
        minutes = await self.reader.throughput()
        peak = max([f + x for _, f, x in minutes], key=lambda v: v.n, default=Figure(0))
        totals = {k: sum((getattr(s, k) for s in stats), Figure(0)) for k in (
            "waiting", "scheduled", "running", "failed", "finished_last_hour",
            "failed_last_hour")}
        return {"stats": stats, "minutes": minutes, "peak": peak, "scale": max(peak.n, 1),
                "totals": totals, "capped": any(v.more for v in totals.values()),
                "count_cap": self.reader.count_cap, "minute_cap": self.reader.minute_cap,
                "mean_sample": MEAN_SAMPLE,
                "finished_hour": sum((f for _, f, _ in minutes), Figure(0)),
                "failed_hour": sum((x for _, _, x in minutes), Figure(0)),
                "now": dt.datetime.now(dt.UTC)}

    async def overview(self, request: Request) -> Response:
        return self.render(request, "overview.html", **await self._overview_context(),
                           nav="overview")

    async def overview_live(self, request: Request) -> Response:
        return self.render(request, "_overview_live.html", **await self._overview_context())

    async def _filters(self, request: Request, states: tuple[str, ...]) -> Filters:
        filters = parse_filters(request.query_params, states)
        if filters.queue is not None and not await self.reader.queue_known(filters.queue):
            raise _Refused(404, f"no queue named {filters.queue!r}: pgqueue has no job, "
                           "archived job or recent history in it")
        return filters

    async def _listing(self, request: Request, template: str, nav: str,
                       states: tuple[str, ...], timed: bool,
                       read: Callable[..., Awaitable[Any]]) -> Response:
        raw = {k: request.query_params.get(k, "")[:2100] for k in (
            "queue", "task", "state", "since", "until", "args")}
        try:
            filters = await self._filters(request, states)
            cursor = parse_cursor(request.query_params.get("after"), timed)
        except (ValidationError, _Refused) as exc:
            status = exc.status if isinstance(exc, _Refused) else 400
            return self.render(request, template, status, nav=nav, raw=raw, states=states,
                               page=None, error=str(exc), filters=Filters())
        page = await read(filters, cursor)
        return self.render(request, template, nav=nav, raw=raw, states=states, page=page,
                           filters=filters, error=None, cursor=cursor)

    async def jobs(self, request: Request) -> Response:
        return await self._listing(request, "jobs.html", "jobs", LIVE_STATES, False,
                                   self.reader.live_jobs)

    async def history(self, request: Request) -> Response:
        return await self._listing(request, "history.html", "history", HISTORY_STATES, False,
                                   self.reader.history)

    async def failed(self, request: Request) -> Response:
        return await self._listing(request, "failed.html", "failed", _NO_STATES, True,
                                   self.reader.failed)

    async def job(self, request: Request) -> Response:
        job_id = parse_id(request.path_params["job_id"])
        job = await self.reader.job(job_id)
        if job is None:
            raise _Refused(404, f"no job with id {job_id}: not live, not archived, and not in "
                           "the history (which may have dropped it)")
        return self.render(request, "job.html", job=job, nav="jobs")

    async def workers(self, request: Request) -> Response:
        return self.render(request, "workers.html", nav="workers",
                           workers=await self.reader.workers(self.stale_after_s),
                           stale_after_s=self.stale_after_s)

    async def schedules(self, request: Request) -> Response:
        return self.render(request, "schedules.html", nav="schedules",
                           schedules=await self.reader.schedules())

    async def limits(self, request: Request) -> Response:
        return self.render(request, "limits.html", nav="limits",
                           limited=await self.reader.limited())

    # ---- actions ---------------------------------------------------------------------------
    def confirm(self, request: Request, title: str, message: str, action: str,
                fields: list[tuple[str, str]], danger: bool = True,
                back: str = "/") -> Response:
        return self.render(request, "confirm.html", title=title, message=message,
                           action=action, fields=fields, danger=danger, back=back)

    async def queue_action(self, request: Request) -> Response:
        form: FormData = request.state.form
        action = request.path_params["action"]
        queue = _str(form.get("queue")) or ""
        if action == "pause":
            await self.app.pause_async(queue)
            return self.back(request, "/", "paused")
        if action == "resume":
            await self.app.resume_async(queue)
            return self.back(request, "/", "resumed")
        raise _Refused(404, f"no queue action {action[:40]!r}")

    async def cancel(self, request: Request) -> Response:
        job_id = parse_id(request.path_params["job_id"])
        form: FormData = request.state.form
        if form.get("confirmed") != "yes":
            return self.confirm(request, "Cancel job", f"Cancel job {job_id}? A waiting job "
                                "goes to the history as cancelled; a running one is asked to "
                                "stop.", f"/jobs/{job_id}/cancel", [], back=f"/jobs/{job_id}")
        done = await self.app.cancel_async(job_id)
        return self.back(request, f"/jobs/{job_id}", "cancelled" if done else "not-live")

    async def failed_action(self, request: Request) -> Response:
        form: FormData = request.state.form
        action = request.path_params["action"]
        confirmed = form.get("confirmed") == "yes"
        if action in ("retry", "purge"):
            ids = parse_ids([str(v) for v in form.getlist("id")])
            fields = [("id", str(i)) for i in ids]
            shown = ", ".join(map(str, ids[:20])) + (" …" if len(ids) > 20 else "")
            if not confirmed:
                verb = "Retry" if action == "retry" else "Purge"
                what = ("go back to waiting, attempts counted from 0 again" if action == "retry"
                        else "be deleted from the archive for good")
                return self.confirm(request, f"{verb} {len(ids)} failed job(s)",
                                    f"Archived job(s) {shown} will {what}.",
                                    f"/failed/{action}", fields, danger=action == "purge",
                                    back="/failed")
            if action == "retry":
                done = len(await self.reader.driver.redrive_async(ids))
                return self.back(request, "/failed", "retried", n=done)
            done = await self.app.purge_failed_async(ids=ids)
            return self.back(request, "/failed", "purged", n=done)
        if action == "retry-matching":
            filters = parse_filters(_form_dict(form), _NO_STATES)
            fields = sorted(filters.query().items())
            ids = await self.reader.failed_ids(filters, RETRY_BATCH + 1)
            if not ids:
                raise _Refused(400, "no archived job matches these filters")
            more = len(ids) > RETRY_BATCH
            ids = ids[:RETRY_BATCH]
            if not confirmed:
                return self.confirm(
                    request, "Retry all matching", f"Retry {len(ids):,}"
                    f"{' (the first batch; more match)' if more else ''} archived job(s) "
                    f"matching {_describe(filters)}?", "/failed/retry-matching", fields,
                    danger=False, back="/failed")
            done = len(await self.reader.driver.redrive_async(ids))
            return self.back(request, "/failed", "retried-more" if more else "retried", n=done)
        if action == "purge-older":
            filters = parse_filters(_form_dict(form), _NO_STATES)
            before_text = (_str(form.get("before")) or "").strip()
            if not before_text:
                raise ValidationError("say how old: an age such as 7d, 12h, 30m or a date")
            if len(before_text) > 60:
                raise ValidationError("the age or date is too long")
            before = parse_age_or_time(before_text, dt.datetime.now(dt.UTC), "before")
            kwargs: dict[str, Any] = {"queue": filters.queue, "task": filters.task,
                                      "before": before}
            if not confirmed:
                n = await self.app.count_failed_async(**kwargs)
                fields = [*sorted(filters.query().items()), ("before", before.isoformat())]
                return self.confirm(
                    request, "Purge older archived jobs",
                    f"Delete {n:,} archived job(s) that failed before "
                    f"{before.strftime('%Y-%m-%d %H:%M:%SZ')}"
                    f"{' in queue ' + filters.queue if filters.queue else ''}"
                    f"{' of task ' + filters.task if filters.task else ''}? This cannot be "
                    "undone.", "/failed/purge-older", fields, back="/failed")
            done = await self.app.purge_failed_async(**kwargs)
            return self.back(request, "/failed", "purged", n=done)
        raise _Refused(404, f"no action {action[:40]!r} on the failed archive")

    async def schedule_action(self, request: Request) -> Response:
        form: FormData = request.state.form
        action = request.path_params["action"]
        name = _str(form.get("name")) or ""
        if action == "pause":
            await self.app.pause_periodic_async(name)
            return self.back(request, "/schedules", "schedule-paused")
        if action == "resume":
            await self.app.resume_periodic_async(name)
            return self.back(request, "/schedules", "schedule-resumed")
        if action == "run-now":
            job_id = await self.app.run_periodic_now_async(name)
            return self.back(request, "/schedules", "schedule-ran", n=job_id)
        raise _Refused(404, f"no schedule action {action[:40]!r}")


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _form_dict(form: FormData) -> dict[str, str]:
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _describe(filters: Filters) -> str:
    parts = [f"{k}={v}" for k, v in filters.query().items()]
    return ", ".join(parts) if parts else "no filter (every archived job)"

