"""Files on disk: nothing of the user's is lost or exposed, and no planted file (a symbolic link,
a FIFO, a device, a huge or deeply nested file, a tampered name) makes the client overwrite,
delete, hang or crash. Datasets and replays against the real sandbox over HTTP; hostile files
in temporary directories.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
import warnings
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from cortex_nb import ConfigurationError, Credentials, HTTPClient, QueryError
from cortex_nb.http import profiles
from cortex_nb.notebook.connection import Connection
from cortex_nb.options import QueryOptions
from cortex_nb.query.service import QueryService
from cortex_nb.record import cassette
from cortex_nb.record.cassette import FORMAT, INSTANCE, Cassette, Recorder, dump_document
from cortex_nb.record.replay import Replay
from cortex_nb.results.cache import ResultCache
from cortex_nb.results.datasets import MANIFEST, open_dataset
from tests.test_datasets import creates, traffic

from .support import API_PATH

SECRET = "cs-DISK-SECRET-81aa"


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def without_hanging(call, fifo: Path):
    """``call()``'s outcome (its value or the exception it raised). Should it block on the FIFO
    (what the client must never do), the FIFO's other end is opened to release it and the
    test fails."""
    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive():
        for flags in (os.O_RDONLY | os.O_NONBLOCK, os.O_WRONLY | os.O_NONBLOCK):
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, flags))
        thread.join(20)
        pytest.fail(f"blocked on the FIFO {fifo}")
    return outcome


def hostile_file(path: Path, kind: str) -> Path:
    """A file that is not what it claims: a FIFO, a link to /dev/zero, nested 100,000 deep."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device link":
        path.symlink_to("/dev/zero")
    else:
        path.write_text("[" * 100_000)
    return path


# -- datasets: --to DIR ---------------------------------------------------------------------------
@pytest.fixture()
def service(sandbox) -> QueryService:
    credentials = Credentials(**sandbox.credentials(), environ={})
    return QueryService(client=HTTPClient(url=sandbox.url, credentials=credentials))


def test_overwrite_never_deletes_what_the_manifest_does_not_list(sandbox, service, tmp_path):
    target = tmp_path / "week"
    first = service.query(traffic(sandbox, "LIMIT 10"), to=target)
    (target / "my_notes.md").write_text("what I found")
    (target / "plots").mkdir()
    (target / "plots" / "fig.png").write_bytes(b"png")
    sandbox.clear()
    with pytest.raises(ConfigurationError, match=r"also .*, which its manifest does not list") as no:
        service.query(traffic(sandbox, "LIMIT 20"), to=target, overwrite=True)
    assert "my_notes.md" in str(no.value) and "plots/" in str(no.value)
    assert creates(sandbox) == 0  # refused before the query ran
    assert (target / "my_notes.md").read_text() == "what I found"
    assert (target / "plots" / "fig.png").read_bytes() == b"png"
    assert open_dataset(target).manifest["job_id"] == first.manifest["job_id"]
    open_dataset(target).verify()


def test_a_link_to_a_dataset_stays_a_link_and_nothing_is_left_beside_it(sandbox, service, tmp_path):
    real, link = tmp_path / "real", tmp_path / "link"
    service.query(traffic(sandbox, "LIMIT 10"), to=real)
    link.symlink_to(real, target_is_directory=True)
    second = service.query(traffic(sandbox, "LIMIT 20"), to=link, overwrite=True)
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert open_dataset(link).rows == open_dataset(real).rows == second.rows == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]
    open_dataset(real).verify()


def test_to_the_current_empty_folder_writes_the_dataset_there(sandbox, service, tmp_path, monkeypatch):
    here = tmp_path / "analysis"
    here.mkdir()
    monkeypatch.chdir(here)
    dataset = service.query(traffic(sandbox, "LIMIT 5"), to=".")
    assert dataset.rows == 5 and (here / MANIFEST).is_file()
    assert Path.cwd().samefile(here)  # the working directory was filled, not moved away
    assert [p.name for p in tmp_path.iterdir()] == ["analysis"]
    again = service.query(traffic(sandbox, "LIMIT 7"), to=".", overwrite=True)
    assert again.rows == open_dataset(here).rows == 7 and Path.cwd().samefile(here)


# -- the result cache -------------------------------------------------------------------------------
def cached_result() -> SimpleNamespace:
    return SimpleNamespace(df=pd.DataFrame({"n": [1, 2]}), job_id="job-1")


def put(cache: ResultCache, sql: str = "SELECT 1") -> str:
    key = ResultCache.key("tenant", "instance", sql, QueryOptions())
    cache.put(key, cached_result(), tenant="tenant", instance="instance", sql=sql,
              options=QueryOptions())
    return key


def test_cached_results_are_private_to_the_user(tmp_path):
    fresh = ResultCache(tmp_path / "new" / "results")
    key = put(fresh)
    assert mode_of(fresh.directory) == 0o700
    assert {p.name: mode_of(p) for p in fresh.directory.iterdir()} == {
        f"{key}.json": 0o600, f"{key}.parquet": 0o600}
    older = tmp_path / "older"  # a cache directory from before, open to everyone
    older.mkdir(mode=0o755)
    os.chmod(older, 0o755)
    put(ResultCache(older))
    assert mode_of(older) == 0o700


def test_a_link_planted_at_a_temporary_name_is_never_followed(tmp_path):
    cache = ResultCache(tmp_path / "results")
    cache.directory.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    key = ResultCache.key("tenant", "instance", "SELECT 1", QueryOptions())
    for name in (f"{key}.parquet", f"{key}.json"):  # the names a guess would give
        (cache.directory / f".{name}.{os.getpid()}.tmp").symlink_to(victim)
    put(cache)
    assert victim.read_text() == "mine"
    assert cache.get(key).df["n"].tolist() == [1, 2]
    assert not (cache.directory / f"{key}.parquet").is_symlink()


def test_a_tampered_entry_key_cannot_make_clear_delete_outside_the_cache(tmp_path):
    cache = ResultCache(tmp_path / "results")
    kept = put(cache)
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("victim", "absolute"):
        for suffix in (".json", ".parquet"):
            (outside / f"{name}{suffix}").write_text("mine")
    tampered = {"sql": "SELECT 1", "tenant": "t", "instance": "i", "created":
                "2026-01-01T00:00:00+00:00", "rows": 1, "job_id": "j"}
    for digest, key in (("a" * 32, "../outside/victim"), ("b" * 32, str(outside / "absolute"))):
        (cache.directory / f"{digest}.json").write_text(json.dumps({**tampered, "key": key}))
    assert [entry.key for entry in cache.entries()] == [kept]
    assert cache.clear() == 1
    assert sorted(p.name for p in outside.iterdir()) == [
        "absolute.json", "absolute.parquet", "victim.json", "victim.parquet"]
    with pytest.raises(ConfigurationError, match="not a result cache key"):
        cache.put("../outside/victim", cached_result(), tenant="t", instance="i", sql="SELECT 1",
                  options=QueryOptions())


def test_a_fifo_among_the_entries_is_skipped_not_waited_on(tmp_path):
    cache = ResultCache(tmp_path / "results")
    key = put(cache)
    fifo = hostile_file(cache.directory / f"{'c' * 32}.json", "fifo")
    outcome = without_hanging(cache.entries, fifo)
    assert [entry.key for entry in outcome["value"]] == [key]


# -- cassettes ----------------------------------------------------------------------------------------
def test_recording_to_a_link_never_overwrites_what_it_points_to(tmp_path):
    victim = tmp_path / "notebook.ipynb"
    victim.write_text('{"cells": []}')
    link = tmp_path / "session.cassette"
    link.symlink_to(victim)
    with pytest.raises(ConfigurationError, match=r"session\.cassette is a symbolic link"):
        Recorder(link)
    with pytest.raises(ConfigurationError, match="symbolic link"):
        Connection().record(link)
    assert victim.read_text() == '{"cells": []}' and link.is_symlink()


def test_recording_to_a_fifo_is_refused_without_waiting_for_a_reader(tmp_path):
    fifo = hostile_file(tmp_path / "session.cassette", "fifo")
    outcome = without_hanging(lambda: Recorder(fifo), fifo)
    assert isinstance(outcome.get("error"), ConfigurationError), outcome
    assert "FIFO" in str(outcome["error"])


@pytest.mark.parametrize("kind", ["fifo", "device link", "deep"])
def test_a_cassette_that_is_not_a_file_of_json_is_one_clear_error(tmp_path, kind):
    path = hostile_file(tmp_path / "hostile.cassette", kind)
    outcome = without_hanging(lambda: Cassette.load(path), path)
    assert isinstance(outcome.get("error"), ConfigurationError), outcome
    assert str(path) in str(outcome["error"]) and "\n" not in str(outcome["error"])


def test_a_cassette_larger_than_the_limit_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "big.cassette"
    header = {"format": FORMAT, "version": 1, "instance": INSTANCE}
    path.write_text(dump_document(header) + "\n" + " " * 5000)
    monkeypatch.setattr(cassette, "MAX_CASSETTE_BYTES", 4096)
    with pytest.raises(ConfigurationError, match="larger than 4,096 bytes"):
        Cassette.load(path)


def write_cassette(path: Path, *exchanges: dict) -> Path:
    header = {"format": FORMAT, "version": 1, "instance": INSTANCE}
    path.write_text("\n".join(dump_document(d) for d in (header, *exchanges)))
    return path


def reply(status: int, headers: dict) -> dict:
    return {"request": {"method": "GET", "path": API_PATH},
            "response": {"status": status, "headers": headers, "json": []}}


def test_a_replayed_cassette_sends_the_client_nowhere_else(tmp_path, httpserver):
    httpserver.expect_request("/steal").respond_with_json([])
    elsewhere = f"http://localhost:{httpserver.port}/steal"
    path = write_cassette(tmp_path / "tampered.cassette", reply(302, {
        "location": elsewhere, "set-cookie": "sid=planted", "content-type": "application/json"}))
    with Replay(path) as replay:
        client = HTTPClient(url=replay.url, credentials=Credentials(**replay.credentials(),
                                                                    environ={}))
        response = client.request(method="GET", path=API_PATH)
    assert response.status_code == 302 and "Location" not in response.headers
    assert httpserver.log == []  # the offline client stayed offline
    assert "Set-Cookie" not in response.headers and not client.session.cookies


@pytest.mark.parametrize(("headers", "status"), [
    ({"content-type": "application/json\r\nLocation: http://evil.invalid/"}, 200),
    ({"x-request-id": "r-1\nSet-Cookie: sid=1"}, 200),
    ({"Bad Name": "x"}, 200),
    ({"X-Split:\r\nLocation": "x"}, 200),
    ({"content-type": "application/json"}, 101),  # would leave the client waiting
])
def test_a_tampered_reply_header_is_refused_when_the_cassette_is_read(tmp_path, headers, status):
    path = write_cassette(tmp_path / "tampered.cassette", reply(status, headers))
    with pytest.raises(ConfigurationError, match=r"tampered|not an exchange") as caught:
        Connection().connect_replay(path)
    assert "\n" not in str(caught.value) and "Record it again" in str(caught.value)


def test_connecting_to_a_replay_ends_recording(sandbox, tmp_path):
    path = tmp_path / "session.cassette"
    connection = Connection()
    connection.record(path)
    connection.connect(Credentials(**sandbox.credentials(), environ={}), url=sandbox.url,
                       instance_id=sandbox.instance_id)
    sql = f"SELECT app FROM `{sandbox.instance_id}.firewall.traffic` ORDER BY app LIMIT 3"
    recorded = connection.require().query(sql).df
    recorded_text = path.read_bytes()
    try:
        connection.connect_replay(path)
        assert connection.recorder is None and "recording" not in connection.describe()
        with pytest.raises(QueryError, match=r"Not in the cassette session\.cassette"):
            connection.require().query("SELECT 42 AS answer")
        pd.testing.assert_frame_equal(connection.require().query(sql).df, recorded)
    finally:
        connection.disconnect()
    assert path.read_bytes() == recorded_text  # the replay's miss was not written into it


# -- profiles ---------------------------------------------------------------------------------------
@pytest.fixture()
def config(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "cfg"
    monkeypatch.setenv(profiles.CONFIG_ENV, str(directory))
    monkeypatch.setenv(profiles.KEYRING_ENV, "0")
    return directory


def saved_with_secrets(config: Path) -> Path:
    with pytest.warns(profiles.SecretsInFileWarning):
        return profiles.save_profile("work", region="europe", client_id="cid-1",
                                     client_secret=SECRET)


def test_a_profiles_file_others_can_read_is_made_private_and_said_so(config):
    path = saved_with_secrets(config)
    os.chmod(path, 0o644)  # as an older tool, or a copy, left it
    with pytest.warns(profiles.ExposedProfilesWarning) as caught:
        assert profiles.load_profile("work")["client_secret"] == SECRET
    (warning,) = caught
    assert str(path) in str(warning.message) and "0644" in str(warning.message)
    assert "now 0600" in str(warning.message) and "rotate" in str(warning.message)
    assert mode_of(path) == 0o600 and SECRET not in str(warning.message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # private now: nothing more to say
        profiles.load_profile("work")


def test_a_config_folder_open_to_everyone_is_made_private(config):
    config.mkdir()
    os.chmod(config, 0o777)
    with pytest.warns(profiles.ExposedProfilesWarning, match=r"0777.*now 0700"):
        profiles.save_profile("plain", region="europe")
    assert mode_of(config) == 0o700
    os.chmod(config, 0o777)
    with pytest.warns(profiles.ExposedProfilesWarning, match=str(config)):
        assert profiles.list_profiles() == ["plain"]
    assert mode_of(config) == 0o700


@pytest.mark.parametrize("kind", ["fifo", "device link", "deep", "huge"])
def test_a_profiles_file_that_is_not_one_is_a_clear_error(config, kind):
    path = config / "profiles.json"
    if kind == "huge":
        config.mkdir()
        path.write_text(json.dumps({"profiles": {}, "padding": "x" * 2**21}))
    else:
        hostile_file(path, kind)
    outcome = without_hanging(profiles.list_profiles, path)
    assert isinstance(outcome.get("error"), ConfigurationError), outcome
    message = str(outcome["error"])
    assert str(path) in message and "\n" not in message
    connecting = without_hanging(lambda: Credentials(profile="work", environ={}), path)
    assert isinstance(connecting.get("error"), ConfigurationError), connecting
