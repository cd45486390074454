"""Profiles on disk: 0600 file, atomic replace, keyring or file for secrets, the CLI."""

from __future__ import annotations

import json
import os
import stat
import threading
import warnings

import pytest

from cortex_nb.exceptions import ConfigurationError
from cortex_nb.http import profiles
from cortex_nb.http.credentials import Credentials
from cortex_nb.http.security import MASK

SECRET = "cs-PROFILE-SECRET-91f2"
REFRESH = "rt-PROFILE-REFRESH-5c3e"
ACCESS = "at-PROFILE-ACCESS-0d7b"


@pytest.fixture
def config(tmp_path, monkeypatch):
    """An empty config dir and no OS keyring: secrets go to the file."""
    directory = tmp_path / "cfg"
    monkeypatch.setenv(profiles.CONFIG_ENV, str(directory))
    monkeypatch.setenv(profiles.KEYRING_ENV, "0")
    for var in ("PAN_CLIENT_ID", "PAN_CLIENT_SECRET", "PAN_REFRESH_TOKEN", "PAN_ACCESS_TOKEN",
                "PAN_TOKEN_URL", "PAN_REGION"):
        monkeypatch.delenv(var, raising=False)
    return directory


@pytest.fixture
def memory_keyring(config, monkeypatch):
    """A usable in-memory keyring backend, installed for the test and removed after."""
    keyring = pytest.importorskip("keyring")
    from keyring.backend import KeyringBackend

    class MemoryKeyring(KeyringBackend):
        priority = 5
        fail_on_set = False

        def __init__(self):
            super().__init__()
            self.items: dict[tuple[str, str], str] = {}

        def set_password(self, service, username, password):
            if self.fail_on_set:
                raise keyring.errors.KeyringLocked("locked")
            self.items[(service, username)] = password

        def get_password(self, service, username):
            return self.items.get((service, username))

        def delete_password(self, service, username):
            self.items.pop((service, username))

    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    monkeypatch.delenv(profiles.KEYRING_ENV)
    yield backend
    keyring.set_keyring(previous)


def save_full(name="prod", **extra):
    fields = {"region": "europe", "client_id": "cid-1", "client_secret": SECRET,
              "refresh_token": REFRESH, "instance_id": "123456"}
    fields.update(extra)
    return profiles.save_profile(name, **fields)


# -- where the file lives ------------------------------------------------------------------------
def test_config_dir_order(tmp_path):
    assert profiles.config_dir({"CORTEX_NB_CONFIG_DIR": str(tmp_path / "a"),
                                "XDG_CONFIG_HOME": str(tmp_path / "x")}) == tmp_path / "a"
    assert profiles.config_dir({"XDG_CONFIG_HOME": str(tmp_path / "x")}) == tmp_path / "x" / "cortex_nb"
    assert profiles.config_dir({}).parts[-2:] == (".config", "cortex_nb")


# -- file mode: secrets in the 0600 file, with a warning -----------------------------------------
def test_save_without_keyring_warns_and_writes_0600(config):
    with pytest.warns(profiles.SecretsInFileWarning, match="no usable OS keyring"):
        path = save_full()
    assert path == config / "profiles.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.stat().st_mode) == 0o700
    assert stat.S_IMODE((config / ".profiles.lock").stat().st_mode) == 0o600
    entry = json.loads(path.read_text())["profiles"]["prod"]
    assert entry["secret_store"] == "file"
    assert entry["client_secret"] == SECRET
    assert profiles.load_profile("prod") == {
        "region": "europe", "client_id": "cid-1", "instance_id": "123456",
        "client_secret": SECRET, "refresh_token": REFRESH,
    }


def test_profile_without_secrets_does_not_warn(config):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        profiles.save_profile("pub", url="https://cdl.example.com", client_id="c")
    assert profiles.show_profile("pub") == {
        "url": "https://cdl.example.com", "client_id": "c", "secret_store": "none",
    }


def test_list_show_delete(config):
    with pytest.warns(profiles.SecretsInFileWarning):
        save_full("b")
        save_full("a", access_token=ACCESS)
    assert profiles.list_profiles() == ["a", "b"]
    shown = profiles.show_profile("a")
    assert shown["client_secret"] == shown["refresh_token"] == shown["access_token"] == MASK
    assert SECRET not in json.dumps(shown)
    profiles.delete_profile("a")
    assert profiles.list_profiles() == ["b"]
    with pytest.raises(ConfigurationError, match="known profiles: b"):
        profiles.delete_profile("a")


def test_missing_profile_names_known_ones(config):
    with pytest.raises(ConfigurationError, match=r"No profile 'nope'.*known profiles: none yet"):
        profiles.load_profile("nope")
    profiles.save_profile("dev", region="uk")
    with pytest.raises(ConfigurationError, match="known profiles: dev"):
        profiles.load_profile("nope")


@pytest.mark.parametrize(
    ("name", "fields", "message"),
    [
        ("", {}, "Invalid profile name"),
        ("../x", {}, "Invalid profile name"),
        ("ok", {"password": "x"}, "Unknown profile field"),
        ("ok", {"region": "mars"}, "Unknown region 'mars'"),
        ("ok", {"region": "uk", "url": "https://a.example"}, "region or a url, not both"),
        ("ok", {"url": "ftp://a.example"}, "not an http"),
        ("ok", {"token_url": "nohost"}, "not an http"),
    ],
)
def test_bad_input_is_refused_and_nothing_written(config, name, fields, message):
    with pytest.raises(ConfigurationError, match=message):
        profiles.save_profile(name, **fields)
    assert not (config / "profiles.json").exists()


def test_broken_file_gives_a_clear_error(config):
    config.mkdir()
    (config / "profiles.json").write_text("{not json")
    with pytest.raises(ConfigurationError, match=r"not valid JSON.*fix it or delete it"):
        profiles.list_profiles()


# -- atomic replace ---------------------------------------------------------------------------------
def test_crash_during_replace_leaves_old_file_intact(config, monkeypatch):
    profiles.save_profile("keep", region="uk", client_id="old")
    path = config / "profiles.json"
    before = path.read_bytes()

    real_replace = os.replace

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(profiles.os, "replace", crash)
    with pytest.raises(OSError, match="No space"):
        profiles.save_profile("keep", region="uk", client_id="new")
    assert path.read_bytes() == before
    assert sorted(p.name for p in config.iterdir()) == [".profiles.lock", "profiles.json"]
    monkeypatch.setattr(profiles.os, "replace", real_replace)
    assert profiles.load_profile("keep")["client_id"] == "old"


def test_write_goes_through_a_temp_file_in_the_same_directory(config, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((os.path.dirname(src), stat.S_IMODE(os.stat(src).st_mode), dst))
        real_replace(src, dst)

    monkeypatch.setattr(profiles.os, "replace", spy)
    profiles.save_profile("x", region="uk")
    assert seen == [(str(config), 0o600, config / "profiles.json")]


def test_concurrent_saves_lose_no_profile(config):
    def work(prefix):
        for i in range(15):
            profiles.save_profile(f"{prefix}{i}", region="uk")

    threads = [threading.Thread(target=work, args=(p,)) for p in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(profiles.list_profiles()) == 45


# -- keyring mode -----------------------------------------------------------------------------------
def test_secrets_go_to_a_usable_keyring(memory_keyring, config):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = save_full()
    text = path.read_text()
    assert SECRET not in text and REFRESH not in text
    entry = json.loads(text)["profiles"]["prod"]
    assert entry["secret_store"] == "keyring"
    assert memory_keyring.items[("cortex_nb", "prod/client_secret")] == SECRET
    assert profiles.load_profile("prod")["refresh_token"] == REFRESH
    assert profiles.show_profile("prod")["client_secret"] == MASK
    profiles.delete_profile("prod")
    assert memory_keyring.items == {}


def test_resave_forgets_secrets_no_longer_given(memory_keyring, config):
    save_full(access_token=ACCESS)
    assert ("cortex_nb", "prod/access_token") in memory_keyring.items
    save_full()
    assert ("cortex_nb", "prod/access_token") not in memory_keyring.items
    assert "access_token" not in profiles.load_profile("prod")


def test_locked_keyring_falls_back_to_file_with_warning(memory_keyring, config):
    memory_keyring.fail_on_set = True
    with pytest.warns(profiles.SecretsInFileWarning, match="keyring refused them"):
        save_full()
    assert profiles.show_profile("prod")["secret_store"] == "file"
    assert profiles.load_profile("prod")["client_secret"] == SECRET


def test_fail_backend_counts_as_no_keyring(config, monkeypatch):
    keyring = pytest.importorskip("keyring")
    from keyring.backends import fail

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    monkeypatch.delenv(profiles.KEYRING_ENV)
    try:
        assert profiles.keyring_available() is False
        with pytest.warns(profiles.SecretsInFileWarning):
            save_full()
    finally:
        keyring.set_keyring(previous)


def test_keyring_gone_at_load_is_a_clear_error(memory_keyring, config, monkeypatch):
    save_full()
    monkeypatch.setenv(profiles.KEYRING_ENV, "off")
    with pytest.raises(ConfigurationError, match="keeps its secrets in the OS keyring"):
        profiles.load_profile("prod")


# -- Credentials ------------------------------------------------------------------------------------
def test_credentials_resolve_from_profile_after_environment(config, monkeypatch):
    with pytest.warns(profiles.SecretsInFileWarning):
        save_full(token_url="https://idp.example.com")
    creds = Credentials(profile="prod")
    assert (creds.client_id, creds.client_secret) == ("cid-1", SECRET)
    assert not hasattr(creds, "region")  # the region is the endpoint's, not a credential's
    assert creds.token_url == "https://idp.example.com/api/oauth2/RequestToken"
    monkeypatch.setenv("PAN_CLIENT_ID", "from-env")
    assert Credentials(profile="prod").client_id == "from-env"


def test_credentials_save_profile(config):
    creds = Credentials(client_id="c", client_secret=SECRET, refresh_token=REFRESH,
                        access_token=ACCESS)
    with pytest.warns(profiles.SecretsInFileWarning):
        creds.save_profile("mine", instance_id="42")
    stored = profiles.load_profile("mine")
    assert stored["refresh_token"] == REFRESH and stored["instance_id"] == "42"
    assert "access_token" not in stored  # refreshable: the short-lived token is not kept
    assert creds.profile == "mine"
    token_only = Credentials(access_token=ACCESS, environ={})
    with pytest.warns(profiles.SecretsInFileWarning):
        token_only.save_profile("tok")
    assert profiles.load_profile("tok")["access_token"] == ACCESS


# -- the command ------------------------------------------------------------------------------------
def test_cli_list_show_delete(config, capsys):
    assert profiles.main(["list"]) == 0
    assert "No profiles in" in capsys.readouterr().out
    with pytest.warns(profiles.SecretsInFileWarning):
        save_full()
    assert profiles.main(["list"]) == 0
    assert capsys.readouterr().out.strip() == "prod"
    assert profiles.main(["show", "prod"]) == 0
    out = capsys.readouterr().out
    assert f"client_secret: {MASK}" in out and "region: europe" in out
    assert SECRET not in out and REFRESH not in out
    assert profiles.main(["delete", "prod"]) == 0
    assert profiles.list_profiles() == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["show", "ghost"], "No profile 'ghost'"),
        (["delete", "ghost"], "No profile 'ghost'"),
        (["show"], "expected list, show NAME or delete NAME"),
        (["frobnicate"], "expected list, show NAME or delete NAME"),
        ([], "expected list"),
    ],
)
def test_cli_errors_are_one_line_exit_2(config, capsys, argv, message):
    assert profiles.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("cortex-nb profiles: error: ") and message in captured.err
    assert "Traceback" not in captured.err


def test_cli_broken_file_is_one_line(config, capsys):
    config.mkdir()
    (config / "profiles.json").write_text("[]")
    assert profiles.main(["list"]) == 2
    assert "has no 'profiles' object" in capsys.readouterr().err


def test_a_profile_s_region_and_instance_decide_where_the_connection_goes(config):
    from cortex_nb.http.endpoints import REGIONS, Endpoint
    from cortex_nb.notebook.connection import Connection

    from .support import make_jwt

    token = make_jwt(2**31 - 1)  # far from expiring: connecting needs no token endpoint
    with pytest.warns(profiles.SecretsInFileWarning):
        profiles.save_profile("eu", region="europe", instance_id="4242", access_token=token)
    connection = Connection()
    connection.connect_profile("eu")
    assert connection.endpoint == Endpoint.for_region("europe", instance_id="4242")
    assert connection.client.url == REGIONS["europe"].api_url
    assert connection.instance_id == "4242"
    connection.connect_profile("eu", url="https://cdl-gateway.example.com")
    assert connection.client.url == "https://cdl-gateway.example.com"
    assert connection.endpoint.region is None and connection.instance_id == "4242"
    connection.disconnect()


# -- hostile or broken disks -----------------------------------------------------------------
CRASHING_SAVE = """
import os, sys
from cortex_nb.http import profiles
os.replace = lambda *args: os._exit(3)  # the process dies between the write and the rename
profiles.save_profile("crashed", region="europe", client_secret=sys.argv[1])
"""


def leftovers(directory) -> list:
    return sorted(p.name for p in directory.glob(".profiles-*.tmp"))


@pytest.mark.parametrize("next_write", ["save", "delete"])
def test_no_secret_outlives_a_crash_in_a_temporary_file(config, next_write):
    import subprocess
    import sys

    with pytest.warns(profiles.SecretsInFileWarning):
        save_full("keep")
    crashed = subprocess.run([sys.executable, "-c", CRASHING_SAVE, "cs-CRASHED-SECRET"],
                             env=os.environ, timeout=60)
    assert crashed.returncode == 3
    (stale,) = leftovers(config)
    assert "cs-CRASHED-SECRET" in (config / stale).read_text()  # the crash left it behind
    if next_write == "save":
        profiles.save_profile("other", region="uk")
    else:
        profiles.delete_profile("keep")
    assert leftovers(config) == []
    for path in config.iterdir():
        assert "cs-CRASHED-SECRET" not in path.read_text(errors="replace")


def test_the_lock_file_is_not_opened_through_a_symbolic_link(config, tmp_path):
    config.mkdir()
    victim = tmp_path / "victim"
    (config / ".profiles.lock").symlink_to(victim)
    with pytest.raises(ConfigurationError, match="is a symbolic link; remove it"):
        profiles.save_profile("prod", region="europe")
    assert not victim.exists()  # nothing was created (or locked) where the link points
    assert not (config / "profiles.json").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"profiles": {"a": {"client_id": "\xff\xfe"}}}', "is not UTF-8 (byte 34)"),
        (b'{"profiles": {"a": "europe"}}', "broken profile 'a': it is not an object"),
        (b'{"profiles": {"a": {"region": 5}}}', "broken profile 'a': region is not a string"),
        (b'{"profiles": {"a": {"client_secret": ["x"]}}}', "client_secret is not a string"),
        (b'{"profiles": {"a": {"secret_store": "vault"}}}', "secret_store is not one of"),
        (b'{"profiles": {"a": {"secret_store": "keyring", "secret_fields": "client_secret"}}}',
         "secret_fields is not a list"),
    ],
)
def test_a_broken_file_is_one_clear_error(config, capsys, content, message):
    config.mkdir()
    (config / "profiles.json").write_bytes(content)
    for argv in (["list"], ["show", "a"], ["delete", "a"]):
        assert profiles.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "Traceback" not in err
    with pytest.raises(ConfigurationError, match="fix it or delete it"):
        Credentials(profile="a", environ={})


def test_url_passwords_are_masked_when_a_profile_is_shown(config, capsys):
    url = "https://analyst:pw-SECRET@gw.example.com"
    profiles.save_profile("gw", url=url, token_url=url + "/token", client_id="cid-1")
    assert profiles.load_profile("gw")["url"] == url  # kept as given, to connect with
    assert profiles.main(["show", "gw"]) == 0
    out = capsys.readouterr().out
    assert "pw-SECRET" not in out and f"https://analyst:{MASK}@gw.example.com" not in out
    assert f"https://{MASK}@gw.example.com" in out
    assert "pw-SECRET" not in repr(profiles.show_profile("gw"))
    assert "pw-SECRET" not in repr(Credentials(profile="gw", environ={}))
