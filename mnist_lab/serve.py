"""`mnist-lab serve`: a page to draw a digit, a page of stored runs, and a JSON prediction API.

Every image goes through the code `mnist-lab predict` uses (request_body reads it with
preprocess, then inference.Classifier), so the page, the API and the CLI give a digit the
same answer; each answer also says which pixels made it (robust.saliency, integrated
gradients). Bad input is a 4xx with {"detail": "<one sentence>"}, never a 500 (request_body
says how).
"""

from __future__ import annotations

import socket
import sys
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from . import __version__
from .errors import UserError
from .inference import Classifier
from .record import RunRecord
from .request_body import (
    MAX_BODY,
    TOO_LARGE,
    BodyLimit,
    BodyTooLargeError,
    error_response,
    from_json,
    read_upload,
)
from .robust.saliency import saliency, signed_map
from .store import Store

CACHE_SIZE = 4  # loaded models kept; a compact CNN is ~30 KB, a large one ~10 MB
WEB = Path(__file__).with_name("web")
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'"}  # nothing from elsewhere


class Prediction(BaseModel):
    """What POST /predict returns."""

    digit: int
    probabilities: list[float]
    model: str
    input: list[list[int]]
    saliency: list[list[float]] | None = Field(description=(
        "28x28, row by row like `input`: integrated gradients of the predicted class's logit "
        "from a black image to `input`, scaled by the largest magnitude into [-1, 1], 3 "
        "decimals (positive: ink that is evidence for the digit, negative: against it; the "
        "background is 0); null for a model without gradients (scikit-learn)"))


class Detail(BaseModel):
    """Every error response."""

    detail: str


class Models:
    """The stored checkpoints, and a small thread-safe LRU cache of loaded Classifiers."""

    def __init__(self, runs_dir: str | Path | None, checkpoint: str | None = None):
        with Store(runs_dir) as store:  # an unusable folder fails here, at start
            self.root = store.root
        self._cache: OrderedDict[str, Classifier] = OrderedDict()
        self._lock = threading.Lock()
        self.default = self._default(checkpoint)
        self.classifier(self.default[1])  # a bad checkpoint fails the start, not a request

    def records(self) -> list[RunRecord]:
        """All run records, oldest first."""
        with Store(self.root) as store:  # a connection per use: they must not cross threads
            return store.runs()

    def resolve(self, run_id: str | None) -> tuple[str, str]:
        """(name, checkpoint path) of a run id or unique prefix; none gives the default."""
        if not run_id:
            return self.default
        with Store(self.root) as store:
            record = store.get(run_id)
        if not record.checkpoint:
            raise UserError(f"run {record.id} has no checkpoint")
        return record.id, record.checkpoint

    def _default(self, checkpoint: str | None) -> tuple[str, str]:
        """The checkpoint named on the command line (file or run id), else the best stored."""
        if checkpoint and not Path(checkpoint).is_file():
            try:
                return self.resolve(checkpoint)
            except UserError as e:
                raise UserError(f"{checkpoint}: no such checkpoint file, and {e}") from None
        if not checkpoint:
            with Store(self.root) as store:
                checkpoint = store.best_checkpoint()
        path = Path(checkpoint).resolve()
        run = next((r.id for r in self.records()
                    if r.checkpoint and Path(r.checkpoint).resolve() == path), None)
        return run or str(checkpoint), str(checkpoint)

    def classifier(self, path: str) -> Classifier:
        """A loaded Classifier, from the cache when there (the least recently used goes)."""
        with self._lock:  # held while loading too: two requests never load the same file twice
            if path not in self._cache:
                self._cache[path] = Classifier(path)
                if len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
            self._cache.move_to_end(path)
            return self._cache[path]

    def reports(self) -> set[str]:
        """Folder names under <runs>/reports holding a report.html: the only ones served."""
        folder = self.root / "reports"
        if not folder.is_dir():
            return set()
        return {p.name for p in folder.iterdir() if (p / "report.html").is_file()}


def _saliency(classifier: Classifier, image: np.ndarray, digit: int) -> list[list[float]] | None:
    """The 28x28 input's integrated gradients for `digit`, in [-1, 1]; None without gradients."""
    # the pixels as Classifier.probabilities makes them; autograd runs outside its
    # inference_mode. One batch of 32 interpolations, forward and backward: for compact_step3
    # ~23 ms on one core, ~28 ms a request end to end (the rest of a request takes ~12 ms)
    x = torch.from_numpy(image).float().div(255)[None, None]
    attr = saliency(classifier.net, x, digit)
    if attr is None:
        return None
    return signed_map(attr[0]).astype(np.float64).round(3).tolist()  # float32 prints long


router = APIRouter()
PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "PNG or JPEG, told by "
                 "its bytes (the part's type is not used), any polarity; preprocessed as "
                 "`mnist-lab predict` does"}}}},
    "application/json": {"schema": {"type": "object", "required": ["image"], "properties": {
        "image": {"type": "array", "minItems": 28, "maxItems": 28, "description": "the "
                  "model's input as it is: 0..255, white digit on black", "items": {
                      "type": "array", "minItems": 28, "maxItems": 28,
                      "items": {"type": "number", "minimum": 0, "maximum": 255}}}}}}}}}
# BodyLimit answers these on every route, before the route itself runs
LIMIT_ERRORS = {400: "the Content-Length header is not a number",
                413: "the request body is over the size limit"}
PREDICT_ERRORS = {
    400: "the body is not valid JSON, the file is not a readable image, or the Content-Length "
         "header is not a number",
    404: "no stored run matches `model`, or its checkpoint is gone",
    413: "the request body or the image is too large",
    415: "the file is neither PNG nor JPEG, or the body is neither multipart nor JSON",
    422: "no file in field `file`, a bad JSON array, or no digit in the image"}


def _responses(errors: dict[int, str]) -> dict:
    """OpenAPI `responses` for these error codes, each with a {"detail": ...} body."""
    return {code: {"model": Detail, "description": text} for code, text in errors.items()}


@router.post("/predict", response_model=Prediction, responses=_responses(PREDICT_ERRORS),
             openapi_extra=PREDICT_BODY)
async def predict(request: Request, model: str | None = None) -> dict:
    """Classify one digit: a PNG/JPEG in form field `file`, or JSON {"image": 28x28 array}.

    `model` picks a stored run by id or unique prefix (default: the server's checkpoint). The
    answer has the model's 28x28 `input` and, for the predicted digit, its `saliency`: which
    pixels of that input made the model say so (integrated gradients, 32 steps)."""
    models: Models = request.app.state.models
    try:
        name, path = await run_in_threadpool(models.resolve, model)
    except UserError as e:
        raise HTTPException(404, str(e)) from None
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        image = await read_upload(request)
    elif kind == "application/json":
        image = await run_in_threadpool(from_json, await request.body())
    else:
        raise HTTPException(415, "send multipart/form-data with a file, or application/json")
    try:
        classifier = await run_in_threadpool(models.classifier, path)
    except UserError as e:  # the run's checkpoint file was removed or replaced
        raise HTTPException(404, str(e)) from None
    probs = (await run_in_threadpool(classifier.probabilities, image[None]))[0]
    probs = probs.astype(np.float64).round(6)  # rounded float32 prints as 9.999999747e-06
    digit = int(probs.argmax())
    heat = await run_in_threadpool(_saliency, classifier, image, digit)
    return {"digit": digit, "probabilities": probs.tolist(), "model": name,
            "input": image.tolist(), "saliency": heat}


@router.get("/models", responses=_responses(LIMIT_ERRORS))
def list_models(request: Request) -> dict:
    """Stored checkpoints, best test accuracy first, and which one is the default."""
    models: Models = request.app.state.models
    name = models.default[0]
    rows = [{"id": r.id, "model": r.model, "dataset": r.dataset,
             "test_accuracy": r.metric("test_accuracy"), "study": r.study,
             "created": r.created, "default": r.id == name}
            for r in models.records() if r.status == "complete" and r.checkpoint]
    rows.sort(key=lambda r: -(r["test_accuracy"] or 0))
    return {"default": name, "models": rows}


@router.get("/runs.json", responses=_responses(LIMIT_ERRORS))
def list_runs(request: Request) -> dict:
    """Every stored run, oldest first, with the link to its study's report when one exists."""
    models: Models = request.app.state.models
    reports = models.reports()
    runs = []
    for r in models.records():
        folder = (r.study or "").replace(":", "-")  # as `study report` names it
        link = f"/reports/{folder}/report.html" if folder in reports else None
        runs.append({"id": r.id, "study": r.study, "model": r.model, "dataset": r.dataset,
                     "status": r.status, "test_accuracy": r.metric("test_accuracy"),
                     "created": r.created, "report": link})
    return {"runs": runs}


@router.get("/reports/{study}/report.html", include_in_schema=False)
def report(request: Request, study: str) -> FileResponse:
    """A study report; only folder names found on disk are served (no path from the URL)."""
    models: Models = request.app.state.models
    if study not in models.reports():
        raise HTTPException(404, f"no report for study {study!r}")
    return FileResponse(models.root / "reports" / study / "report.html")


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    """The draw-a-digit page."""
    return FileResponse(WEB / "index.html", headers=PAGE_HEADERS)


@router.get("/runs", include_in_schema=False)
def runs_page() -> FileResponse:
    """The stored-runs page."""
    return FileResponse(WEB / "runs.html", headers=PAGE_HEADERS)


def create_app(runs_dir: str | Path | None, checkpoint: str | None = None) -> FastAPI:
    """The app over a results store; `checkpoint` (file or run id) defaults to the best run."""
    app = FastAPI(title="mnist-lab", version=__version__,
                  description="Classify handwritten digits with stored mnist-lab checkpoints.")
    app.state.models = Models(runs_dir, checkpoint)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=WEB), name="static")
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    app.add_exception_handler(BodyTooLargeError,
                              lambda request, exc: error_response(413, TOO_LARGE))
    return app


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port: a taken port is a one-line error, not a uvicorn log."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {port}")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def serve(runs_dir: str | None, checkpoint: str | None, host: str, port: int) -> None:
    """Run the app on host:port until interrupted (Ctrl-C)."""
    import uvicorn

    # One image per request: intra-op threads cannot help it, and with requests running in
    # parallel threads each one's OpenMP team would fight the others for the same cores.
    torch.set_num_threads(1)
    app = create_app(runs_dir, checkpoint)
    sock = _listen(host, port)
    url = f"http://{host if ':' not in host else f'[{host}]'}:{sock.getsockname()[1]}/"
    print(f"mnist-lab serve: model {app.state.models.default[0]} at {url} (API docs: {url}docs;"
          " Ctrl-C stops)", file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
