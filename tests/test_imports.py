"""What importing syncd does to its host: nothing beyond the standard library for the
consumer module; the command's start-up trick never breaks an import, and its quick
exit loses nothing a normal exit would keep."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def python(code: str, *, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


def test_the_consumer_module_loads_only_the_standard_library_and_adds_no_import_hook() -> None:
    run = python(
        "import json, sys\n"
        "hooks, before = list(sys.meta_path), set(sys.modules)\n"
        "import syncd, syncd.mapping\n"
        "print(json.dumps({'same_hooks': sys.meta_path == hooks,"
        " 'modules': sorted({m.split('.')[0] for m in set(sys.modules) - before})}))\n"
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["same_hooks"]
    assert "syncd" in seen["modules"]
    outside = [m for m in seen["modules"] if m != "syncd" and m not in sys.stdlib_module_names]
    assert outside == []


def test_the_commands_start_up_trick_degrades_to_a_plain_import(tmp_path: Path) -> None:
    # A package that imports its optional part only if present (the trick applies) and
    # one whose new version needs it (the trick must step aside, not break the import).
    (tmp_path / "lean_opt.py").write_text("")
    (tmp_path / "lean.py").write_text("try:\n    import lean_opt\nexcept ImportError:\n"
                                      "    lean_opt = None\n")  # fmt: skip
    (tmp_path / "needy_opt.py").write_text("VALUE = 7\n")
    (tmp_path / "needy.py").write_text("import needy_opt\nVALUE = needy_opt.VALUE\n")
    run = python(
        f"import sys; sys.path[:0] = [{str(REPO)!r}, {str(tmp_path)!r}]\n"
        "from syncd._startup import load_without\n"
        "load_without('lean', 'lean_opt'); load_without('needy', 'needy_opt')\n"
        "import lean, needy\n"
        "print(lean.lean_opt is None, 'lean_opt' in sys.modules, needy.VALUE)\n",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["True", "False", "7"]


def test_the_command_still_hides_what_it_never_uses() -> None:
    run = python(
        "import sys\n"
        "from syncd.__main__ import main\n"
        "sys.argv = ['syncd', '--version']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "import syncd.cli, syncd.logs, httpx, structlog, httpcore\n"
        "print('httpx._main' in sys.modules, 'rich' in sys.modules,\n"
        "      'trio' in sys.modules, 'anyio' in sys.modules)\n"
    )
    assert run.returncode == 0, run.stderr
    # trio (installed with the test dependencies) and anyio are httpcore's async side.
    assert run.stdout.split()[-4:] == ["False", "False", "False", "False"]


def test_a_module_loaded_on_use_is_the_module_at_its_first_use() -> None:
    # Under the command, asyncio, uuid and certifi are stand-ins until read from:
    # structlog imports the first two for async loggers and a deprecated module syncd
    # never calls, httpcore the last for the CA bundle only https reads. Whoever uses
    # one gets the real module.
    run = python(
        "import sys\n"
        "from syncd.__main__ import trim_start_up\n"
        "trim_start_up()\n"
        "import syncd.cli, syncd.logs, structlog, httpcore\n"
        "before = [type(sys.modules[m]).__name__ for m in ('asyncio', 'uuid', 'certifi')]\n"
        "import asyncio, uuid, certifi\n"
        "from asyncio import events\n"
        "from uuid import UUID\n"
        "import asyncio.queues\n"
        "async def one():\n    return 1\n"
        "print(*before, asyncio.run(one()), events.get_event_loop_policy() is not None,\n"
        "      type(sys.modules['asyncio']).__name__, asyncio.queues.Queue.__name__,\n"
        "      uuid.uuid4().version, UUID(int=1).int, certifi.where().endswith('.pem'))\n"
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["_StandIn", "_StandIn", "_StandIn", "1", "True", "module",
                                  "Queue", "4", "1", "True"]  # fmt: skip


# The command as its entry point runs it, then a line that only a process still running
# after the command returned would print.
_COMMAND = """
import atexit, sys
atexit.register(lambda: open({mark!r}, "w").write("handler ran"))
{before}
from syncd.__main__ import main
sys.argv = ["syncd", *{argv!r}]
code = main()
print("after the command")
sys.exit(code)
"""


def test_the_command_ends_with_its_output_whole_and_exit_handlers_run(tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    run = python(_COMMAND.format(mark=str(mark), before="", argv=["completion", "bash"]))
    assert run.returncode == 0, run.stderr
    # Block-buffered into a pipe: the script arrives whole only if it was flushed.
    whole = python("import sys; from syncd.cli import main; sys.exit(main(['completion', 'bash']))")
    assert whole.returncode == 0 and len(whole.stdout) > 1000
    assert run.stdout.removesuffix("after the command\n") == whole.stdout
    assert mark.read_text() == "handler ran"

    usage = python(_COMMAND.format(mark=str(mark), before="", argv=[]))
    assert usage.returncode == 2 and "usage:" in usage.stdout


def test_the_command_waits_for_a_thread_still_at_work(tmp_path: Path) -> None:
    # A host that embeds the command and left a thread working gets the normal exit:
    # the thread finishes, and the code after the command runs.
    done = tmp_path / "done"
    # The thread works until the main thread is done, whatever the machine's load: it
    # is still at work when the command returns, and only a normal exit waits for it.
    before = ("import threading\n"
              "def late():\n"
              "    threading.main_thread().join(timeout=60)\n"
              f"    open({str(done)!r}, 'w').write('finished')\n"
              "threading.Thread(target=late).start()\n")  # fmt: skip
    run = python(_COMMAND.format(mark=str(tmp_path / "mark"), before=before,
                                 argv=["completion", "bash"]))  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert done.read_text() == "finished"
    assert run.stdout.endswith("after the command\n")
    assert (tmp_path / "mark").read_text() == "handler ran"
