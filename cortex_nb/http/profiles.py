"""Named connection profiles on disk, with their secrets in the OS keyring when one is usable.

Profiles live in one JSON file, ``profiles.json``, in the user's config directory:
``$CORTEX_NB_CONFIG_DIR`` if set, else ``$XDG_CONFIG_HOME/cortex_nb``, else
``~/.config/cortex_nb``. The directory is created 0700 and the file 0600. Every write goes to a
temporary file in the same directory, is fsynced, then replaces the old file with ``os.replace``:
a crash leaves either the old file or the new one, never a torn one, and the temporary file
a crash leaves behind (secrets in it) is removed by the next save or delete. The lock file is
opened without following a symbolic link. A file that is not UTF-8 JSON of the expected shape
is one clear error, and so is one that is not a regular file (a FIFO, a link to a device), is
larger than ``MAX_FILE_BYTES`` or nested too deeply: found before reading, never a hang.

A profiles file found holding secrets while others may read it (a file from before, or one
copied in) is made 0600 at once, with an ``ExposedProfilesWarning`` naming it: the secrets
may have been read, so rotate them. A config directory that others may enter is made 0700.

Secrets (client secret, refresh token, access token) go to the OS keyring (the optional
``keyring`` package, imported only when needed) under the service ``cortex_nb``. When no usable
keyring is there (not installed, or only its fail/null backends, or ``CORTEX_NB_KEYRING=0``),
they are written into the 0600 file and a ``SecretsInFileWarning`` says so. Each profile records
where its secrets live (``secret_store``: ``keyring``, ``file`` or ``none``).

``main(argv)`` is the ``cortex-nb profiles list|show NAME|delete NAME`` command.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cortex_nb.exceptions import ConfigurationError, CortexError
from cortex_nb.http.endpoints import REGION_NAMES, check_url
from cortex_nb.http.security import MASK, SECRET_FIELDS, mask_url, secret
from cortex_nb.localfiles import private_directory, read_regular_file

__all__ = [
    "CONFIG_ENV",
    "FIELDS",
    "KEYRING_ENV",
    "SECRET_FIELDS",
    "ExposedProfilesWarning",
    "SecretsInFileWarning",
    "config_dir",
    "delete_profile",
    "keyring_available",
    "list_profiles",
    "load_profile",
    "main",
    "profiles_path",
    "save_profile",
    "show_profile",
]

CONFIG_ENV = "CORTEX_NB_CONFIG_DIR"
KEYRING_ENV = "CORTEX_NB_KEYRING"  # "0", "off", "no" or "false": never use the keyring
KEYRING_SERVICE = "cortex_nb"
FILE_NAME = "profiles.json"
FORMAT_VERSION = 1
PUBLIC_FIELDS = ("region", "url", "client_id", "token_url", "instance_id")
FIELDS = PUBLIC_FIELDS + SECRET_FIELDS
SECRET_STORES = ("keyring", "file", "none")
_TEMP_PREFIX, _TEMP_SUFFIX = ".profiles-", ".tmp"
MAX_FILE_BYTES = 1 * 2**20  # thousands of profiles; anything larger is not a profiles file
PRIVATE_FILE_MODE = 0o600
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
USAGE = "usage: cortex-nb profiles list | show NAME | delete NAME"


class SecretsInFileWarning(UserWarning):
    """Secrets were written to the 0600 profiles file because no OS keyring is usable."""


class ExposedProfilesWarning(UserWarning):
    """The profiles file (secrets in it) or its directory was open to other users; now closed."""


# -- where -----------------------------------------------------------------------------------
def config_dir(environ: dict[str, str] | None = None) -> Path:
    """The directory that holds ``profiles.json`` (see the module docstring for the order)."""
    env = os.environ if environ is None else environ
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "cortex_nb"


def profiles_path() -> Path:
    """The profiles file, ``<config dir>/profiles.json``."""
    return config_dir() / FILE_NAME


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid profile name, else raise ``ConfigurationError``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"Invalid profile name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit."
        )
    return name


# -- public API --------------------------------------------------------------------------------
def list_profiles() -> list[str]:
    """Names of the stored profiles, sorted."""
    return sorted(_read_store(profiles_path())["profiles"])


def save_profile(name: str, **fields: str | None) -> Path:
    """Store profile ``name`` (replacing one of that name) and return the file's path.

    Fields: region or url, client_id, token_url, instance_id, and the secrets client_secret,
    refresh_token, access_token. ``None`` or empty values are left out.
    """
    check_name(name)
    values = _clean_fields(fields)
    path = profiles_path()
    with _locked(path):
        store = _read_store(path)
        old = store["profiles"].get(name, {})
        entry = {k: v for k, v in values.items() if k in PUBLIC_FIELDS}
        entry.update(_store_secrets(name, {k: v for k, v in values.items() if k in SECRET_FIELDS}))
        _forget_keyring_secrets(name, old, keep=entry)
        store["profiles"][name] = entry
        _write_store(path, store)
    return path


def load_profile(name: str) -> dict[str, str]:
    """The fields of profile ``name``, secrets included (read from the keyring if kept there)."""
    entry = _entry(name)
    values = {k: entry[k] for k in PUBLIC_FIELDS if entry.get(k)}
    if entry.get("secret_store") == "keyring":
        values.update(_keyring_secrets(name, entry.get("secret_fields", [])))
    else:
        values.update({k: secret(entry[k]) for k in SECRET_FIELDS if entry.get(k)})
    return values


def show_profile(name: str) -> dict[str, str]:
    """Profile ``name`` for display: public fields, each secret as ``******``, and its store."""
    entry = _entry(name)
    shown = {k: mask_url(entry[k]) for k in PUBLIC_FIELDS if entry.get(k)}
    for field in SECRET_FIELDS:
        if entry.get(field) or field in entry.get("secret_fields", []):
            shown[field] = MASK
    shown["secret_store"] = entry.get("secret_store", "none")
    return shown


def delete_profile(name: str) -> None:
    """Remove profile ``name`` and its keyring secrets."""
    path = profiles_path()
    with _locked(path):
        store = _read_store(path)
        if name not in store["profiles"]:
            raise _missing(name, store)
        entry = store["profiles"].pop(name)
        _write_store(path, store)
    _forget_keyring_secrets(name, entry, keep={})


# -- fields --------------------------------------------------------------------------------------
def _clean_fields(fields: dict[str, str | None]) -> dict[str, str]:
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise ConfigurationError(
            f"Unknown profile field(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}."
        )
    values = {k: str(v) for k, v in fields.items() if v not in (None, "")}
    if "region" in values and "url" in values:
        raise ConfigurationError("A profile names a region or a url, not both.")
    region = values.get("region")
    if region is not None and region.lower() not in REGION_NAMES:
        raise ConfigurationError(
            f"Unknown region {region!r}; use one of {', '.join(REGION_NAMES)}, or url=."
        )
    for key in ("url", "token_url"):
        if key in values:
            values[key] = check_url(values[key], f"profile's {key}")
    return values


def _entry(name: str) -> dict[str, Any]:
    store = _read_store(profiles_path())
    if name not in store["profiles"]:
        raise _missing(name, store)
    return store["profiles"][name]


def _missing(name: str, store: dict[str, Any]) -> ConfigurationError:
    known = ", ".join(sorted(store["profiles"])) or "none yet"
    return ConfigurationError(
        f"No profile {name!r} in {profiles_path()} (known profiles: {known}). "
        "Save one with the credentials panel or Credentials(...).save_profile(name)."
    )


# -- the file ------------------------------------------------------------------------------------
def _read_store(path: Path) -> dict[str, Any]:
    try:
        _private_config_dir(path.parent, create=False)
        data = read_regular_file(
            path, what="The profiles file", limit=MAX_FILE_BYTES,
            fix=f"move it away, or set {CONFIG_ENV} to another directory.",
        )
    except FileNotFoundError:
        return {"version": FORMAT_VERSION, "profiles": {}}
    except OSError as exc:
        raise ConfigurationError(f"Cannot read the profiles file {path}: {exc.strerror}.") from None
    try:
        problem, store = _parse_store(data.decode("utf-8"))
    except UnicodeDecodeError as exc:  # say which byte, never show the text
        problem = f"is not UTF-8 (byte {exc.start})"
    if problem:
        raise ConfigurationError(f"The profiles file {path} {problem}; fix it or delete it.")
    _private_secrets_file(path, store)
    return store


def _parse_store(text: str) -> tuple[str | None, Any]:
    """(what is wrong, or None; the decoded store) for the text of a profiles file."""
    try:
        store = json.loads(text)
    except ValueError as exc:
        return f"is not valid JSON ({exc})", None
    except RecursionError:  # nested deeper than any profiles file is
        return "is not a profiles file (JSON nested too deeply)", None
    if not isinstance(store, dict) or not isinstance(store.get("profiles"), dict):
        return "has no 'profiles' object", None
    for name, entry in store["profiles"].items():
        problem = _entry_problem(entry)
        if problem:
            return f"has a broken profile {name!r}: {problem}", None
    return None, store


def _entry_problem(entry: Any) -> str | None:
    """What is wrong with one stored profile's shape, or None."""
    if not isinstance(entry, dict):
        return "it is not an object"
    bad = [k for k in FIELDS if k in entry and not isinstance(entry[k], str)]
    if bad:
        return f"{bad[0]} is not a string"
    if entry.get("secret_store", "none") not in SECRET_STORES:
        return f"secret_store is not one of {', '.join(SECRET_STORES)}"
    kept = entry.get("secret_fields", [])
    if not isinstance(kept, list) or not set(kept) <= set(SECRET_FIELDS):
        return f"secret_fields is not a list of {', '.join(SECRET_FIELDS)}"
    return None


def _holds_secrets(store: dict[str, Any]) -> bool:
    """Whether any stored profile keeps a secret in the file itself."""
    return any(entry.get(field) for entry in store["profiles"].values() for field in SECRET_FIELDS)


def _private_secrets_file(path: Path, store: dict[str, Any]) -> None:
    """Make a profiles file that holds secrets 0600 if others may read it, and say so."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if not mode & 0o077 or not _holds_secrets(store):
        return
    try:
        os.chmod(path, PRIVATE_FILE_MODE)
    except OSError as exc:
        raise ConfigurationError(
            f"The profiles file {path} holds secrets and others may read it (mode {mode:04o}), "
            f"and it cannot be made private ({exc.strerror}); run `chmod 600 {path}`."
        ) from None
    warnings.warn(
        f"The profiles file {path} holds secrets and was readable by other users (mode "
        f"{mode:04o}); it is now 0600. The secrets may have been read: rotate them (a new "
        "client secret and refresh token) if others use this machine.",
        ExposedProfilesWarning,
        stacklevel=4,
    )


def _private_config_dir(directory: Path, create: bool) -> None:
    """Create the config directory 0700 (``create``), or tighten one others may enter."""
    if not create and not directory.is_dir():
        return
    was = private_directory(directory)
    if was is not None and was & 0o022:  # others could have replaced the file: say so
        warnings.warn(
            f"The config directory {directory} was writable by other users (mode {was:04o}); "
            "it is now 0700. Check that its profiles are the ones you saved.",
            ExposedProfilesWarning,
            stacklevel=5,
        )


def _write_store(path: Path, store: dict[str, Any]) -> None:
    """Write ``store`` to ``path`` atomically: temp file (0600) in the same dir, fsync, replace."""
    data = json.dumps(store, indent=2, sort_keys=True) + "\n"
    _remove_stale_temporaries(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise ConfigurationError(f"Cannot write in {path.parent}: {exc.strerror}.") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _remove_stale_temporaries(directory: Path) -> None:
    """Delete temporary files a crashed write left (they may hold secrets); the lock is held."""
    for stale in directory.glob(f"{_TEMP_PREFIX}*{_TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            stale.unlink()


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (POSIX only; Windows cannot open a directory)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Create the directory (0700); hold a lock so that concurrent saves lose no edits."""
    lock = path.parent / ".profiles.lock"
    try:
        _private_config_dir(path.parent, create=True)
        # never through a symbolic link: one planted there would make us create or lock any file
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(lock, flags, 0o600)
    except OSError as exc:
        problem = f"Cannot create the config directory {path.parent}: {exc.strerror}."
        if lock.is_symlink():
            problem = f"The lock file {lock} is a symbolic link; remove it."
        raise ConfigurationError(f"{problem} Set {CONFIG_ENV} to a writable directory.") from None
    try:
        with contextlib.suppress(ImportError):
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# -- the keyring ---------------------------------------------------------------------------------
def _keyring() -> Any:
    """The ``keyring`` module when a usable backend is there, else None."""
    if os.environ.get(KEYRING_ENV, "").strip().lower() in ("0", "off", "no", "false"):
        return None
    try:
        import keyring
    except Exception:  # not installed, or its own import failed: both mean "no keyring"
        return None
    try:
        backend = keyring.get_keyring()
        usable = type(backend).priority > 0  # the fail, null and empty chain backends are <= 0
    except Exception:
        return None
    return keyring if usable else None


def keyring_available() -> bool:
    """True when secrets saved now would go to the OS keyring."""
    return _keyring() is not None


def _store_secrets(name: str, secrets: dict[str, str]) -> dict[str, Any]:
    """Put ``secrets`` in the keyring if possible; return the entry's secret fields."""
    if not secrets:
        return {"secret_store": "none"}
    keyring = _keyring()
    if keyring is not None:
        try:
            for field, value in secrets.items():
                keyring.set_password(KEYRING_SERVICE, f"{name}/{field}", value)
            return {"secret_store": "keyring", "secret_fields": sorted(secrets)}
        except Exception as exc:  # a locked or broken keyring: fall back to the file, and say so
            reason = f"the OS keyring refused them ({type(exc).__name__})"
    else:
        reason = "no usable OS keyring was found (pip install keyring, or see its docs)"
    warnings.warn(
        f"Profile {name!r}: secrets stored in the profiles file {profiles_path()} (mode 0600) "
        f"because {reason}.",
        SecretsInFileWarning,
        stacklevel=3,
    )
    return {"secret_store": "file", **secrets}


def _keyring_secrets(name: str, fields: list[str]) -> dict[str, str]:
    keyring = _keyring()
    if keyring is None:
        raise ConfigurationError(
            f"Profile {name!r} keeps its secrets in the OS keyring, which is not usable now. "
            "Install or unlock the keyring, or save the profile again."
        )
    values: dict[str, str] = {}
    for field in fields:
        try:
            value = keyring.get_password(KEYRING_SERVICE, f"{name}/{field}")
        except Exception as exc:
            raise ConfigurationError(
                f"Could not read {field} of profile {name!r} from the OS keyring "
                f"({type(exc).__name__}); unlock it or save the profile again."
            ) from None
        if not value:
            raise ConfigurationError(
                f"The OS keyring has no {field} for profile {name!r}; save the profile again."
            )
        values[field] = secret(value)
    return values


def _forget_keyring_secrets(name: str, old: dict[str, Any], keep: dict[str, Any]) -> None:
    """Delete keyring entries of ``old`` that the new entry ``keep`` no longer holds there."""
    if old.get("secret_store") != "keyring":
        return
    kept = set(keep.get("secret_fields", [])) if keep.get("secret_store") == "keyring" else set()
    keyring = _keyring()
    if keyring is None:
        return
    for field in set(old.get("secret_fields", [])) - kept:
        with contextlib.suppress(Exception):  # already gone, or keyring gone: nothing to leak
            keyring.delete_password(KEYRING_SERVICE, f"{name}/{field}")


# -- the command -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """``cortex-nb profiles list|show NAME|delete NAME``; 0 on success, 2 with one line on error."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"], ["help"]):
        print(USAGE)
        return 0
    try:
        _run_command(args)
    except (CortexError, OSError) as exc:
        print(f"cortex-nb profiles: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _run_command(args: list[str]) -> None:
    command, rest = (args[0], args[1:]) if args else ("", [])
    if command == "list" and not rest:
        names = list_profiles()
        print("\n".join(names) if names else f"No profiles in {profiles_path()}.")
    elif command == "show" and len(rest) == 1:
        shown = show_profile(rest[0])
        print(f"profile: {rest[0]}  ({profiles_path()})")
        for key, value in shown.items():
            print(f"  {key}: {value}")
    elif command == "delete" and len(rest) == 1:
        delete_profile(rest[0])
        print(f"Deleted profile {rest[0]!r}.")
    else:
        raise ConfigurationError(f"expected list, show NAME or delete NAME ({USAGE})")
