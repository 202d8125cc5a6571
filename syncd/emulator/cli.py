"""`python -m syncd.emulator` / `syncd emulate`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from .app import EmulatorApp
from .server import bind_socket, make_server, root_url, serve
from .settings import CONTENT_DOWNLOAD, RATE_PROFILES, EmulatorSettings, parse_size
from .validate import FLAVORS

KEYS_ENV = "SYNCD_EMULATOR_API_KEYS"


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be a probability between 0 and 1")
    return value


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError("must be a finite number of seconds >= 0")
    return value


def _bytes_per_s(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a finite number >= 0")
    return value


def _bandwidth(text: str) -> float:
    try:
        return float(parse_size(text))
    except ValueError:
        raise argparse.ArgumentTypeError("must be a size per second: 50MB, 512KiB, 0") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="syncd emulate",
        description="Local emulator of the DashScope OpenAI-compatible Files API"
                    " (or of OpenAI's, with --flavor openai).")
    p.add_argument("--flavor", choices=sorted(FLAVORS), default="dashscope",
                   help="whose Files API to serve: purposes, ids, caps, list paging, errors"
                        " and expiry; dashscope serves under /compatible-mode/v1, openai"
                        " under /v1")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    p.add_argument("--data-dir", type=Path, default=Path("emulator-data"))
    p.add_argument("--api-key", action="append", default=[], dest="api_keys",
                   help=f"accepted key, repeatable (also ${KEYS_ENV}, comma-separated;"
                        " default sk-emulator); each key is a separate account")
    p.add_argument("--max-files", type=int, default=10_000)
    p.add_argument("--max-bytes", type=_size, default=parse_size("100GB"))
    p.add_argument("--rate-profile", choices=sorted(RATE_PROFILES), default="seed")
    p.add_argument("--upload-rate", type=_positive)
    p.add_argument("--read-rate", type=_positive,
                   help="retrieve+list+content; with --rate-profile newer, the shared"
                        " read+delete budget")
    p.add_argument("--delete-rate", type=_positive)
    p.add_argument("--rate-limit", choices=("on", "off"), default="on")
    p.add_argument("--retry-after", action="store_true",
                   help="send Retry-After on rate-limit 429s")
    p.add_argument("--fault-5xx", type=_rate, default=0.0)
    p.add_argument("--fault-429", type=_rate, default=0.0)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--bandwidth", type=_bandwidth, default=0.0, metavar="SIZE",
                   help="read upload bodies at SIZE bytes per second (50MB, 512KiB), one"
                        " link shared by every connection; 0: unshaped")
    p.add_argument("--drop-before", type=_rate, default=0.0)
    p.add_argument("--drop-after-store", type=_rate, default=0.0)
    p.add_argument("--fault-list-omit", type=_rate, default=0.0, metavar="F",
                   help="leave a seeded fraction F of the entries out of each list page")
    p.add_argument("--unknown-id-status", type=int, choices=(404, 400), default=404,
                   help="400 answers unknown ids with a bare {\"detail\": ...} body")
    p.add_argument("--clock-offset-s", type=float, default=0.0, metavar="S",
                   help="shift the emulator's clock (created_at, expiry, Date) by S seconds")
    p.add_argument("--fault-trickle-list", type=_bytes_per_s, default=0.0, metavar="BPS",
                   help="send list responses at BPS bytes per second, headers first")
    p.add_argument("--fault-trickle-upload", type=_bytes_per_s, default=0.0, metavar="BPS",
                   help="send the responses of stored uploads at BPS bytes per second")
    p.add_argument("--fault-429-retry-after", type=_non_negative, metavar="S",
                   help="Retry-After of injected 429s (default: 1 with --retry-after)")
    p.add_argument("--fault-reject-upload", type=_rate, default=0.0, metavar="F",
                   help="refuse a seeded fraction F of uploads with a 400, nothing stored")
    p.add_argument("--fault-echo-auth", action="store_true",
                   help="error responses echo the request's Authorization header in every"
                        " field, as some gateways do")
    p.add_argument("--batch-step-s", type=_seconds, default=1.0, metavar="S",
                   help="seconds a batch job spends in each status (validating, in_progress,"
                        " finalizing, cancelling); 0 runs a job on the next call")
    p.add_argument("--vs-step-s", type=_seconds, default=1.0, metavar="S",
                   help="seconds a file attached to a vector store stays in_progress"
                        " (openai flavour)")
    p.add_argument("--batch-expire", type=_rate, default=0.0, metavar="F",
                   help="a seeded fraction F of batch jobs expires half done")
    p.add_argument("--content-download", choices=CONTENT_DOWNLOAD, default="any",
                   help="provider: serve file content only where the provider does"
                        " (DashScope: batch output files); any: every file (default)")
    p.add_argument("--fault-truncate-content", type=_rate, default=0.0, metavar="F",
                   help="cut a seeded fraction F of content responses off halfway")
    p.add_argument("--seed", type=int)
    p.add_argument("--log-level", default="warning",
                   choices=("critical", "error", "warning", "info", "debug"))
    return p


def settings_from_args(args: argparse.Namespace) -> EmulatorSettings:
    keys = list(args.api_keys)
    keys += [k.strip() for k in os.environ.get(KEYS_ENV, "").split(",") if k.strip()]
    return EmulatorSettings(
        data_dir=args.data_dir, api_keys=list(dict.fromkeys(keys)), host=args.host,
        port=args.port, max_files=args.max_files, max_bytes=args.max_bytes,
        rate_profile=args.rate_profile, upload_rate=args.upload_rate,
        read_rate=args.read_rate, delete_rate=args.delete_rate,
        rate_limit=args.rate_limit == "on", retry_after=args.retry_after,
        fault_5xx=args.fault_5xx, fault_429=args.fault_429, latency_ms=args.latency_ms,
        bandwidth=args.bandwidth,
        jitter_ms=args.jitter_ms, drop_before=args.drop_before,
        drop_after_store=args.drop_after_store, fault_list_omit=args.fault_list_omit,
        unknown_id_status=args.unknown_id_status, clock_offset_s=args.clock_offset_s,
        fault_trickle_list=args.fault_trickle_list,
        fault_trickle_upload=args.fault_trickle_upload,
        fault_429_retry_after=args.fault_429_retry_after,
        fault_reject_upload=args.fault_reject_upload, fault_echo_auth=args.fault_echo_auth,
        batch_step_s=args.batch_step_s, batch_expire=args.batch_expire,
        vs_step_s=args.vs_step_s,
        content_download=args.content_download,
        fault_truncate_content=args.fault_truncate_content,
        flavor=args.flavor, seed=args.seed, log_level=args.log_level)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    # The event loop stamps each request's arrival for the rate limiter; with worker
    # threads parsing uploads, the default 5 ms GIL switch interval lets those stamps
    # lag by tens of ms under load, bunching arrivals the network never bunched.
    sys.setswitchinterval(0.0005)
    # stdout carries exactly one line (the URL) for parent processes; logs go to stderr.
    logging.basicConfig(stream=sys.stderr, level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        sock = bind_socket(settings.host, settings.port)
    except OSError as exc:
        print(f"syncd-emulator: cannot listen on {settings.host}:{settings.port}: {exc}",
              file=sys.stderr)
        return 2
    port = sock.getsockname()[1]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = EmulatorApp(settings)
    server = make_server(app, settings)
    url = root_url(settings.host, port) + app.flavor.api_prefix

    def announce() -> None:
        print(f"syncd-emulator listening on {url}", flush=True)

    try:
        asyncio.run(serve(server, sock, announce))
    except KeyboardInterrupt:
        pass
    finally:
        app.close()
        sock.close()
    return 0
