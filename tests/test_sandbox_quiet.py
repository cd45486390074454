"""A client that goes away never makes the sandbox print; server-side errors are one line, and
only when verbose (in a notebook the sandbox's stderr is the cell's output)."""

from __future__ import annotations

import signal
import socket
import struct
import time

import requests

from cortex_nb.sandbox import Sandbox
from tests.test_sandbox_cli import start_cli

BIG_PAGE = "/query/v2/jobResults/{job}?pageSize=100000"


def abandon(port: int, request: bytes, read: int = 0) -> None:
    """Send ``request``, read ``read`` bytes of the reply, then reset the connection (Ctrl-C)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
    sock.sendall(request)
    if read:
        sock.recv(read)
    sock.close()


def big_job(url: str, token: str) -> str:
    """The id of a finished job whose first page is megabytes, far more than socket buffers."""
    headers = {"Authorization": f"Bearer {token}"}
    body = {"params": {"query": "SELECT * FROM `firewall.traffic`"}}
    job_id = requests.post(f"{url}/query/v2/jobs", json=body, headers=headers, timeout=10)
    job_id = job_id.json()["jobId"]
    page = requests.get(
        f"{url}/query/v2/jobResults/{job_id}",
        params={"maxWait": 2000, "pageSize": 1},
        headers=headers,
        timeout=10,
    )
    assert page.json()["state"] == "DONE"
    return job_id


def go_away_in_every_way(port: int, token: str, job_id: str) -> None:
    """Clients that leave mid-reply, mid-body, mid-headers and while idle."""
    auth = f"Authorization: Bearer {token}\r\nHost: 127.0.0.1\r\n"
    page = f"GET {BIG_PAGE.format(job=job_id)} HTTP/1.1\r\n{auth}\r\n".encode()
    for _ in range(3):
        abandon(port, page, read=100)  # mid-reply
    abandon(port, f"POST /query/v2/jobs HTTP/1.1\r\n{auth}Content-Length: 500\r\n\r\n{{".encode())
    abandon(port, b"GET /query/v2/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # mid-headers
    abandon(port, b"")  # idle
    time.sleep(0.3)  # let the handlers meet the resets


def test_clients_going_away_print_nothing_in_process(capfd):
    with Sandbox(rows=3000) as sb:
        token = sb.issue_access_token()
        go_away_in_every_way(sb.port, token, big_job(sb.url, token))
        assert len(sb.requests) >= 5
    assert capfd.readouterr() == ("", "")


def test_clients_going_away_print_nothing_from_the_command():
    proc, url, creds = start_cli("--rows", "3000")
    try:
        token = _token(url, creds)
        go_away_in_every_way(int(url.rsplit(":", 1)[1]), token, big_job(url, token))
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and err == ""
    assert out.endswith("sandbox stopped\n")


def _token(url: str, creds: dict) -> str:
    grant = {**creds, "grant_type": "refresh_token"}
    return requests.post(f"{url}/api/oauth2/RequestToken", json=grant, timeout=10).json()[
        "access_token"
    ]


def test_server_side_errors_are_one_line_and_only_when_verbose(capfd, monkeypatch):
    for verbose in (False, True):
        with Sandbox(rows=100, verbose=verbose) as sb:
            monkeypatch.setattr(sb.api, "handle", _broken_route)
            r = requests.get(f"{sb.url}/query/v2/jobs", timeout=10)
            assert r.status_code == 500
            assert r.json()["errors"][0]["message"] == (
                "Internal error in the sandbox: KeyError: 'a bug'"
            )
        err = capfd.readouterr().err
        if verbose:
            assert err == "cortex-nb sandbox: error in GET /query/v2/jobs: KeyError: 'a bug'\n"
        else:
            assert err == ""


def _broken_route(request):
    raise KeyError("a bug")
