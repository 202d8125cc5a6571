"""What a batch job does to its input: the job-level checks that fail it whole, and the
run that answers each request into the output or error file (a deterministic fake
completion: an echo of its last message; an embedding from its text's hash). The job's
bookkeeping and lifecycle are ``batches``'."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .validate import Flavor

# A job that fails validation reports at most this many problems.
MAX_JOB_ERRORS = 100
# The free test model and the only url it takes.
TEST_MODEL = "batch-test-model"
TEST_URL = "/v1/chat/ds-test"
CHAT_URLS = ("/v1/chat/completions", TEST_URL)


class JobFiles:
    """A job's working files (input, output, error) while it runs."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        work_dir.mkdir(parents=True, exist_ok=True)

    def path(self, batch_id: str, kind: str) -> Path:
        return self.work_dir / f"{batch_id}.{kind}"

    def clean(self, batch_id: str) -> None:
        for kind in ("input", "output", "error"):
            self.path(batch_id, kind).unlink(missing_ok=True)


def _problem(code: str, message: str, line: int | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": line}


def validate_job(flavor: Flavor, input_path: Path, body: dict[str, Any]
                 ) -> tuple[list[dict[str, Any]], int]:
    """The job-level checks: problems that fail the whole job, and the request count."""
    endpoint = body["endpoint"]
    model_code = "mismatched_model" if flavor.name == "dashscope" else "model_mismatch"
    problems: list[dict[str, Any]] = []
    seen: set[str] = set()
    model: str | None = None
    total = 0
    for lineno, obj in _lines(input_path):
        if len(problems) >= MAX_JOB_ERRORS:
            break
        total += 1
        if not isinstance(obj, dict):
            problems.append(_problem("invalid_json_line",
                                     f"Line {lineno} is not a JSON object.", lineno))
            continue
        custom_id = obj.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            problems.append(_problem("invalid_json_line",
                                     f"Line {lineno}: 'custom_id' must be a string.", lineno))
        elif custom_id in seen:
            problems.append(_problem(
                "duplicate_custom_id",
                f"The custom_id '{custom_id}' for this request is a duplicate of another"
                " request. The custom_id parameter must be unique for each request in a"
                " batch.", lineno))
        else:
            seen.add(custom_id)
        if obj.get("method") != "POST":
            problems.append(_problem("invalid_json_line",
                                     f"Line {lineno}: 'method' must be 'POST'.", lineno))
        if obj.get("url") != endpoint:
            problems.append(_problem(
                "url_mismatch", f"Line {lineno}: the url {obj.get('url')!r} does not match"
                f" the batch's endpoint {endpoint!r}.", lineno))
        request = obj.get("body")
        line_model = request.get("model") if isinstance(request, dict) else None
        if not isinstance(line_model, str) or not line_model:
            problems.append(_problem("invalid_json_line",
                                     f"Line {lineno}: 'body.model' is required.", lineno))
        elif model is None:
            model = line_model
        elif line_model != model:
            problems.append(_problem(
                model_code, f"Line {lineno}: the model {line_model!r} differs from"
                f" {model!r}; one batch uses one model.", lineno))
    if total == 0 and not problems:
        problems.append(_problem("empty_file", "The input file has no requests."))
    return problems, total


def run_job(flavor: Flavor, files: JobFiles, body: dict[str, Any], limit: int | None
            ) -> tuple[int, int]:
    """Answer the requests into the job's output and error files; the first ``limit``
    only (the rest expired) when given. Returns (completed, failed)."""
    batch_id = body["id"]
    done = failed = 0
    with files.path(batch_id, "output").open("w", encoding="utf-8") as out, \
            files.path(batch_id, "error").open("w", encoding="utf-8") as err:
        for index, (_, obj) in enumerate(_lines(files.path(batch_id, "input"))):
            custom_id = str(obj.get("custom_id"))
            line_id = "batch_req_" + _digest(batch_id, custom_id)[:24]
            request_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{batch_id}/{custom_id}"))
            if limit is not None and index >= limit:
                _write(err, {"id": line_id, "custom_id": custom_id, "response": None,
                             "error": {"code": "batch_expired", "message":
                                       "This request could not be executed before the"
                                       " completion window expired."}})
                failed += 1
                continue
            problem = request_problem(flavor, body["endpoint"], obj["body"])
            if problem is not None:
                code, message = problem
                _write(err, {"id": line_id, "custom_id": custom_id, "response": {
                    "status_code": 400, "request_id": request_id, "body": {"error": {
                        "code": code, "message": message,
                        "type": "invalid_request_error"}}},
                    "error": {"code": code, "message": message}})
                failed += 1
                continue
            _write(out, {"id": line_id, "custom_id": custom_id, "response": {
                "status_code": 200, "request_id": request_id,
                "body": fake_answer(body["endpoint"], obj["body"], body["created_at"])},
                "error": None})
            done += 1
    return done, failed


def request_problem(flavor: Flavor, url: str, request: dict[str, Any]) -> tuple[str, str] | None:
    """Why the provider's model endpoint would refuse one request (its parameters), or
    None. Such a request fails alone: its line goes to the error file."""
    code = "InvalidParameter" if flavor.name == "dashscope" else "invalid_request_error"
    if flavor.name == "dashscope" and request.get("model") == TEST_MODEL \
            and url != TEST_URL:
        return "mismatched_test_url", f"The model {TEST_MODEL} only serves {TEST_URL}."
    if url in CHAT_URLS:
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m
                for m in messages):
            return code, ("'messages' must be a non-empty list of objects with 'role'"
                          " and 'content'.")
    elif url == "/v1/embeddings":
        value = request.get("input")
        if not (isinstance(value, str) and value) and not (
                isinstance(value, list) and value
                and all(isinstance(v, str) and v for v in value)):
            return code, "'input' must be a non-empty string or list of strings."
    elif url == "/v1/responses" and "input" not in request:
        return code, "'input' is required."
    elif url == "/v1/completions" and "prompt" not in request:
        return code, "'prompt' is required."
    return None


def _lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON or None when not JSON) of each non-blank line."""
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.rstrip(b"\r\n")
            if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line.decode("utf-8"))
            except ValueError:
                yield lineno, None


def _write(fh: IO[str], obj: dict[str, Any]) -> None:
    fh.write(json.dumps(obj, ensure_ascii=False) + "\n")


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return json.dumps(content, ensure_ascii=False)


def _usage(prompt: str, reply: str) -> dict[str, int]:
    p, c = len(prompt.split()) or 1, len(reply.split()) or 1
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def fake_answer(url: str, request: dict[str, Any], created: int) -> dict[str, Any]:
    """A deterministic answer: the same request always gets the same body (an echo)."""
    model = request.get("model")
    digest = _digest(json.dumps(request, sort_keys=True, ensure_ascii=False))
    if url == "/v1/embeddings":
        value = request["input"]
        inputs = [value] if isinstance(value, str) else list(value)
        data = [{"object": "embedding", "index": i, "embedding": _vector(text)}
                for i, text in enumerate(inputs)]
        usage = _usage(" ".join(inputs), "")
        return {"object": "list", "model": model, "data": data,
                "usage": {"prompt_tokens": usage["prompt_tokens"],
                          "total_tokens": usage["prompt_tokens"]}}
    if url == "/v1/responses":
        prompt = _text(request.get("input"))
        reply = f"echo: {prompt}"
        return {"id": f"resp_{digest[:24]}", "object": "response", "created_at": created,
                "model": model, "status": "completed",
                "output": [{"type": "message", "role": "assistant", "content": [
                    {"type": "output_text", "text": reply}]}],
                "usage": _usage(prompt, reply)}
    if url == "/v1/completions":
        prompt = _text(request.get("prompt"))
        reply = f"echo: {prompt}"
        return {"id": f"cmpl-{digest[:24]}", "object": "text_completion", "created": created,
                "model": model, "choices": [{"index": 0, "text": reply,
                                             "finish_reason": "stop"}],
                "usage": _usage(prompt, reply)}
    messages = request.get("messages") or [{}]
    prompt = _text(messages[-1].get("content", ""))
    reply = f"echo: {prompt}"
    return {"id": f"chatcmpl-{digest[:24]}", "object": "chat.completion", "created": created,
            "model": model, "choices": [{"index": 0, "message": {
                "role": "assistant", "content": reply}, "finish_reason": "stop",
                "logprobs": None}],
            "usage": _usage(prompt, reply)}


def _vector(text: str) -> list[float]:
    raw = hashlib.sha256(text.encode()).digest()
    return [round((b - 127.5) / 127.5, 6) for b in raw[:8]]
