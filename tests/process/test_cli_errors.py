"""Every operator mistake and unreachable dependency is one line on stderr, with the right status.

The CLI runs as a real subprocess against the mock marketplace (in this process), a tiny server
answering HTML, a closed port, a port in use and the local PostgreSQL. Each case checks the line
names what is wrong and where (the file and key, the variable, the URL or the address), that no
traceback is printed, and the exit status: 2 configuration or usage, 3 unreachable dependency.
``--debug`` brings the traceback back.
"""

from __future__ import annotations

import http.server
import os
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cancel_sandbox.local import Sandbox
from processor.config.schema import ConfigError, load_config
from processor.daemon.startup_checks import journal_directory as _journal_directory

from ..cli_support import write_config


class _Html(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        body = b"<html><body>Sign in</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(generate=5) as box:
        yield box


@pytest.fixture(scope="module")
def html_url() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Html)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/public/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def _cli(
    *args: str,
    env: dict[str, str | None] | None = None,
    sandbox: Sandbox | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("CANCEL_PROCESSOR_", "CONNECT_"))
    }
    if sandbox is not None:
        environ.update(sandbox.environ())
    for key, value in (env or {}).items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    return subprocess.run(
        [sys.executable, "-m", "processor", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def _one_line(result: subprocess.CompletedProcess[str], status: int, *words: str) -> str:
    err = result.stderr
    assert "Traceback" not in err, err[-3000:]
    assert result.returncode == status, (result.returncode, err[-3000:])
    mine = [line for line in err.splitlines() if line.startswith("cancel-processor")]
    assert len(mine) == 1, err[-3000:]
    for word in words:
        assert word in mine[0], mine[0]
    return mine[0]


def test_journal_directory_that_cannot_be_written_is_a_configuration_error(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = write_config(tmp_path, sandbox)
    result = _cli(
        "run",
        "--once",
        "--config",
        str(config),
        sandbox=sandbox,
        env={"CANCEL_PROCESSOR_JOURNAL__URL": "sqlite:////proc/journal.db"},
    )  # even root cannot
    _one_line(result, 2, "/proc/journal.db", "journal.url")
    missing = _cli(
        "run",
        "--once",
        "--config",
        str(config),
        sandbox=sandbox,
        env={"CANCEL_PROCESSOR_JOURNAL__URL": f"sqlite:///{tmp_path}/no/such/dir/j.db"},
    )
    _one_line(missing, 2, "does not exist", "journal.url")


def test_the_permission_check_names_the_file_and_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As root every directory is writable; the check itself is what a non-root operator meets.
    config = load_config(None, {"CANCEL_PROCESSOR_JOURNAL__URL": f"sqlite:///{tmp_path}/j.db"})
    monkeypatch.setattr(os, "access", lambda *_args, **_kw: False)
    with pytest.raises(ConfigError) as refused:
        _journal_directory(config)
    assert "journal.url" in str(refused.value) and "cannot be written" in str(refused.value)


def test_postgresql_unreachable_and_schema_missing(
    tmp_path: Path, sandbox: Sandbox, postgres_url: str
) -> None:
    config = write_config(tmp_path, sandbox)
    down = _cli(
        "run",
        "--once",
        "--config",
        str(config),
        sandbox=sandbox,
        env={
            "CANCEL_PROCESSOR_JOURNAL__URL": "postgresql://postgres@127.0.0.1:1/test",
            "CANCEL_PROCESSOR_JOURNAL__POOL_SIZE": "1",
        },
    )
    _one_line(down, 3, "postgresql://postgres@127.0.0.1:1/test", "journal.url")
    url = postgres_url  # the fixture skips (or fails under CI) without a PostgreSQL
    schema = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3Dno_such_schema_13"
    empty = _cli(
        "run",
        "--once",
        "--config",
        str(config),
        sandbox=sandbox,
        env={"CANCEL_PROCESSOR_JOURNAL__URL": schema},
    )
    _one_line(empty, 2, "journal migrate", str(config))


def test_a_config_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("# café\nprocessing: {concurrency: 2}\n".encode("latin-1"))
    _one_line(_cli("run", "--once", "--config", str(path)), 2, str(path), "UTF-8", "line 1")


@pytest.mark.parametrize("value", ["-5", "0", "lots"])
def test_concurrency_must_be_a_positive_number(
    tmp_path: Path, sandbox: Sandbox, value: str
) -> None:
    result = _cli(
        "run",
        "--once",
        "--config",
        str(write_config(tmp_path, sandbox)),
        "--concurrency",
        value,
        sandbox=sandbox,
    )
    _one_line(result, 2, "--concurrency", value)


def test_an_ops_port_in_use_says_address_in_use(
    tmp_path: Path, sandbox: Sandbox, busy_port: int
) -> None:
    config = write_config(
        tmp_path, sandbox, http={"enabled": True, "host": "127.0.0.1", "port": busy_port}
    )
    _one_line(
        _cli("run", "--config", str(config), sandbox=sandbox),
        2,
        "address in use",
        f"127.0.0.1:{busy_port}",
        "http.port",
    )


def test_connect_down_401_or_html_under_dry_run(
    tmp_path: Path, sandbox: Sandbox, html_url: str
) -> None:
    config = str(write_config(tmp_path, sandbox))
    down = _cli(
        "run",
        "--dry-run",
        "--config",
        config,
        sandbox=sandbox,
        env={"CONNECT_ENDPOINT": "http://127.0.0.1:1/public/v1"},
    )
    _one_line(down, 3, "http://127.0.0.1:1/public/v1", "unreachable")
    wrong_key = _cli(
        "run",
        "--dry-run",
        "--config",
        config,
        sandbox=sandbox,
        env={"CONNECT_API_KEY": "ApiKey SU-000-000-000:not-the-secret"},
    )
    line = _one_line(wrong_key, 2, "401", "CONNECT_API_KEY", sandbox.endpoint)
    assert "not-the-secret" not in line
    html = _cli(
        "run", "--dry-run", "--config", config, sandbox=sandbox, env={"CONNECT_ENDPOINT": html_url}
    )
    _one_line(html, 3, html_url, "connect.endpoint")


def test_debug_shows_the_traceback(tmp_path: Path, sandbox: Sandbox) -> None:
    config = str(write_config(tmp_path, sandbox))
    env = {"CONNECT_ENDPOINT": "http://127.0.0.1:1/public/v1"}
    assert (
        "Traceback"
        in _cli("--debug", "run", "--dry-run", "--config", config, sandbox=sandbox, env=env).stderr
    )
    assert (
        "Traceback"
        in _cli(
            "run",
            "--dry-run",
            "--config",
            config,
            sandbox=sandbox,
            env={**env, "CANCEL_PROCESSOR_DEBUG": "1"},
        ).stderr
    )


def test_an_environment_variable_mistake_names_the_variable(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = str(write_config(tmp_path, sandbox))
    typo = _cli(
        "run",
        "--once",
        "--config",
        config,
        sandbox=sandbox,
        env={"CANCEL_PROCESSOR_PROCESSING__CONCURENCY": "4"},
    )
    _one_line(
        typo,
        2,
        "environment variable CANCEL_PROCESSOR_PROCESSING__CONCURENCY",
        "processing.concurency",
    )
    value = _cli(
        "run",
        "--once",
        "--config",
        config,
        sandbox=sandbox,
        env={"CANCEL_PROCESSOR_PROCESSING__CONCURRENCY": "many"},
    )
    _one_line(value, 2, "environment variable CANCEL_PROCESSOR_PROCESSING__CONCURRENCY", "many")


def test_no_products_is_a_configuration_error(tmp_path: Path, sandbox: Sandbox) -> None:
    data = yaml.safe_load(write_config(tmp_path, sandbox).read_text())
    for products in ({}, None):
        data["products"] = products
        (tmp_path / "empty.yaml").write_text(yaml.safe_dump(data))
        for mode in ("--once", "--dry-run"):
            result = _cli("run", mode, "--config", str(tmp_path / "empty.yaml"), sandbox=sandbox)
            _one_line(result, 2, "products", "nothing would ever be processed")


def test_connect_without_tls_is_refused(tmp_path: Path, sandbox: Sandbox) -> None:
    config = str(write_config(tmp_path, sandbox))
    off = _cli(
        "run",
        "--once",
        "--config",
        config,
        sandbox=sandbox,
        env={"CANCEL_PROCESSOR_CONNECT__VERIFY": "false"},
    )
    _one_line(off, 2, "connect.verify", "cannot be turned off")
    clear = _cli(
        "run",
        "--once",
        "--config",
        config,
        sandbox=sandbox,
        env={"CONNECT_ENDPOINT": "http://connect.example/public/v1"},
    )
    _one_line(clear, 2, "CONNECT_ENDPOINT", "allow_insecure")


@pytest.mark.parametrize("command", [["status"], ["report"], ["journal", "export"]])
def test_a_reader_that_goes_away_is_not_an_error(
    tmp_path: Path, sandbox: Sandbox, command: list[str]
) -> None:
    config = str(write_config(tmp_path, sandbox))
    assert _cli("run", "--once", "--config", config, sandbox=sandbox).returncode == 0
    read, write = os.pipe()
    os.close(read)  # like `| head` having exited before anything was written
    try:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("CANCEL_PROCESSOR_")}
        result = subprocess.run(
            [sys.executable, "-m", "processor", *command, "--config", config],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            env=environ,
        )
    finally:
        os.close(write)
    assert result.stderr == "" and result.returncode == 0, result.stderr[-2000:]
