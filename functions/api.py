"""The control plane's HTTP API: one FastAPI app behind API Gateway (HTTP API) via Mangum.

Lambda handler: ``functions.api.handler``; local: ``uvicorn functions.api:app``. Imports are
kept to what every request needs (boto3 clients and httpx load on first use) because this
module's import time is the Lambda cold start.
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from mangum import Mangum

from functions import admin, recordings, snapstart, twilio_webhooks, vapi_webhooks, web
from functions.console import routes as console
from functions.outbound import routes as outbound_routes
from functions.outbound import webhooks as outbound_webhooks
from voicebridge.config import ConfigError, running_in_lambda

snapstart.register()  # SnapStart: warm before the snapshot, re-read secrets after a restore
app = FastAPI(
    title="voicebridge control plane",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,  # no unauthenticated schema endpoint
)
app.add_middleware(web.TimingMiddleware)
app.include_router(twilio_webhooks.router)
app.include_router(vapi_webhooks.router)
app.include_router(admin.router)
app.include_router(outbound_webhooks.router)
app.include_router(outbound_routes.router)
app.include_router(console.router)
app.include_router(recordings.router)


@app.get("/health")
async def health() -> JSONResponse:
    """200 only when the configuration loads: a misconfigured API (under uvicorn, or a Lambda
    whose secret lost a key) answers 503 naming the bad variables, never their values."""
    try:
        web.settings()
    except ConfigError as exc:
        web.logger.error("configuration invalid", extra={"problems": exc.problems})
        variables = sorted({problem.split()[0].rstrip(":") for problem in exc.problems})
        return JSONResponse({"status": "misconfigured", "variables": variables}, status_code=503)
    return JSONResponse({"status": "ok"})


@app.exception_handler(ConfigError)
async def config_error(_: Request, exc: ConfigError) -> JSONResponse:
    web.logger.error(str(exc))  # one line naming the variable (never its value)
    return JSONResponse({"error": "server misconfigured"}, status_code=500)


@app.exception_handler(HTTPException)
async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


handler = Mangum(app, lifespan="off")

if running_in_lambda():
    # Fail the Lambda init with one line naming the variable, not a caller's first request.
    web.settings()
