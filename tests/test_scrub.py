"""The API key is masked in whatever an error takes from the network, in any spelling a
gateway might echo it in, before anything stores, logs or shows it; and the key
object never shows itself."""

from __future__ import annotations

import copy
import json
import pickle
from base64 import b64encode, urlsafe_b64encode
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from syncd.api._http import error_for_response
from syncd.api.errors import APIError, InvalidRequestError, NetworkError, RateLimitedError
from syncd.api.key import ApiKey

KEY = "sk-Scrub7Me0Please1ve4a9e5d77"
AUTH = f"Bearer {KEY}"
# What must never come out: the key, its middle, its tail, URL-encoded or upper-cased.
NEEDLES = (KEY, KEY[3:-3], KEY[-10:], KEY[:11])


def _leaks(text: str) -> list[str]:
    folded = text.lower()
    return [n for n in NEEDLES if n.lower() in folded]


def _everything(error: APIError) -> str:
    shown = [str(error), repr(error), error.message, str(error.code), str(error.request_id)]
    restored = pickle.loads(pickle.dumps(error))
    return "\n".join([*shown, str(restored), repr(pickle.dumps(error))])


ECHOES: dict[str, tuple[int, dict[str, str] | None, Any]] = {
    "every field of the OpenAI envelope": (400, None, {
        "error": {"message": f"invalid file ({AUTH})", "type": AUTH, "param": quote(KEY),
                  "code": f"invalid_file:{KEY}", "details": {"authorization": AUTH}},
        "request_id": f"req-1/{KEY}"}),
    "the code alone": (400, None, {"error": {"message": "invalid file", "code": AUTH}}),
    "the type, for want of a code": (400, None, {"error": {"message": "no", "type": KEY}}),
    "DashScope's flat body": (400, None, {"message": f"bad {KEY}", "code": KEY,
                                          "request_id": KEY}),
    "the request id header": (404, {"x-request-id": f"gw-{KEY}"}, {"error": {"message": "no"}}),
    "the tail only": (403, None, {"error": {"message": f"key ...{KEY[-12:]} refused"}}),
    "URL-encoded": (400, None, {"error": {"message": "Bearer%20" + quote(KEY, safe="")}}),
    "upper case": (400, None, {"error": {"message": AUTH.upper()}}),
    "base64, as a gateway's token dump": (401, None, {"error": {
        "message": f"token rejected: {b64encode(AUTH.encode()).decode()}",
        "code": b64encode(KEY.encode()).decode()}}),
    "base64url, inside a longer token": (400, None, {"error": {
        "message": urlsafe_b64encode(f'{{"u":1,"k":"{KEY}"}}'.encode()).decode()}}),
    "a detail list": (422, None, {"detail": [{"msg": f"header {AUTH}"}, {"msg": KEY}]}),
    "a detail object": (400, None, {"detail": {"headers": {"Authorization": AUTH}}}),
    "raw text": (502, None, f"<html>upstream said: Authorization: {AUTH}</html>".encode()),
    "a 429 in every field": (429, {"retry-after": "2", "x-request-id": KEY}, {
        "error": {"message": AUTH, "code": AUTH, "type": AUTH}, "request_id": AUTH}),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(ECHOES))
def test_an_error_that_echoes_the_key_never_holds_it(case: str) -> None:
    ApiKey(KEY)  # the client holds it: it is registered
    status, headers, body = ECHOES[case]
    if isinstance(body, bytes):
        response = httpx.Response(status, content=body, headers=headers)
    else:
        response = httpx.Response(status, json=body, headers=headers)
    error = error_for_response(response, KEY)
    assert _leaks(_everything(error)) == []
    assert "***" in _everything(error)


def test_an_error_made_anywhere_from_network_text_is_scrubbed() -> None:
    """The constructor itself scrubs: no caller can forget."""
    ApiKey(KEY)
    made = [
        APIError(f"list: {AUTH}", code=KEY, request_id=KEY[-9:] + "x" + KEY[4:16]),
        InvalidRequestError(f"{KEY}", status=400, code=quote(AUTH, safe="")),
        RateLimitedError(AUTH, retry_after=1.0, request_id=f"r/{KEY}"),
        NetworkError(f"list: RemoteProtocolError: illegal header b'{AUTH}'", phase="receive"),
    ]
    for error in made:
        assert _leaks(_everything(error)) == [], repr(error)


def test_the_scrubber_masks_runs_of_the_key_in_any_spelling() -> None:
    from syncd.api.scrub import Scrubber

    masker = Scrubber()
    odd = 'sk-a+b/c=d%e&f"g\\h<i>jklmnopqrs'
    masker.add(odd)
    escaped = json.dumps(odd)[1:-1]
    for echo in (odd, quote(odd, safe=""), quote(odd, safe="").lower(), escaped,
                 escaped.replace("/", "\\/"), odd.upper(), odd[-9:], odd[2:12]):  # fmt: skip
        assert masker.scrub(f"<{echo}>") == "<***>", echo
    unrelated = "nothing of it here, but 7 of its characters: sk-a+b/"
    assert masker.scrub(unrelated) == unrelated
    short = Scrubber()
    short.add("sk-test-1")  # masked whole only: 8 of 9 characters would be most of it
    assert short.scrub("a sk-test-1 b SK-TEST-1 c sk-test-") == "a *** b *** c sk-test-"
    tiny = Scrubber()
    tiny.add("abc")  # would mask ordinary words
    assert tiny.scrub("abc") == "abc"


@pytest.mark.parametrize("before", [b"", b"Bearer ", b"x", b"xy", b'{"k":"'])
@pytest.mark.parametrize("after", [b"", b"!", b'"}'])
def test_every_base64_character_the_key_decides_is_masked(before: bytes, after: bytes) -> None:
    from syncd.api.scrub import MASK, Scrubber

    masker = Scrubber()
    masker.add(KEY)
    for encode in (b64encode, urlsafe_b64encode):
        echo = encode(before + KEY.encode() + after).decode()
        shown = masker.scrub(echo)
        head, _, tail = shown.partition(MASK)
        # What is left decodes to the bytes around the key, and a bit of its edges.
        assert MASK in shown and MASK not in tail, shown
        assert len(head) <= -(-8 * len(before) // 6) and len(tail) <= len(echo) - (
            8 * (len(before) + len(KEY)) // 6), shown


def test_the_key_object_never_shows_itself() -> None:
    key = ApiKey(KEY)
    for shown in (str(key), repr(key), f"{key}", f"{key!r}", f"{key:>40}", str([key])):
        assert _leaks(shown) == [], shown
    with pytest.raises(TypeError):
        pickle.dumps(key)
    assert copy.copy(key) is key and copy.deepcopy({"k": key})["k"] is key
    assert key.reveal() == KEY


def test_log_lines_mask_the_key_in_nested_values(capsys: pytest.CaptureFixture[str]) -> None:
    import structlog

    from syncd import logs

    ApiKey(KEY)
    logs.set_overrides("json", "info")
    try:
        logs.configure()
        structlog.get_logger("t").warning(
            "echo", body={"error": {"code": AUTH, "list": [KEY[-11:], (quote(KEY),)]}},
            message=f"said {AUTH.upper()}",
        )  # fmt: skip
    finally:
        logs.set_overrides(None, None)
        logs.configure()
    err = capsys.readouterr().err
    assert '"event": "echo"' in err and "***" in err, err
    assert _leaks(err) == [], err
