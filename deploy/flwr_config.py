"""The `flwr` CLI's connection to a SuperLink, one entry of ``$FLWR_HOME/config.toml``.

    python deploy/flwr_config.py CONFIG NAME ADDRESS (--insecure | --root-certificates CA_FILE)

sets ``[superlink.NAME]`` to ``address = ADDRESS`` plus ``insecure = true`` or
``root-certificates = CA_FILE`` (made absolute), and keeps every other table and key as it was. A
missing file starts from what `flwr` itself writes on first use. The file is read with ``tomllib``
and written with ``tomli_w`` (comments are not kept; `flwr` drops them too whenever it rewrites the
file), atomically: a new file beside it, renamed over it, so a reader never sees half a file and a
symbolic link planted at CONFIG is refused rather than written through.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

__all__ = ["FlwrConfigError", "read_config", "set_connection", "write_config"]

# What `flwr` writes on first use (flwr.cli.constant.DEFAULT_FLOWER_CONFIG_TOML in 1.42).
FLWR_DEFAULT = """[superlink]
default = "local"

[superlink.supergrid]
address = "api.flower.ai"

[superlink.local]
address = ":local:"
"""


class FlwrConfigError(ValueError):
    """config.toml cannot be read as a `flwr` configuration, or cannot be written safely."""


def read_config(path: Path) -> dict[str, Any]:
    """The parsed file, or `flwr`'s first-use default if there is none."""
    if not path.exists():
        return tomllib.loads(FLWR_DEFAULT)
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise FlwrConfigError(f"{path} is not valid TOML ({err}): fix it, or move it away to let "
                              "flwr write a fresh one") from None
    if not isinstance(config.get("superlink", {}), dict):
        raise FlwrConfigError(f"{path}: 'superlink' is a {type(config['superlink']).__name__}, not a "
                              "table of connections ([superlink.<name>])")
    return config


def write_config(path: Path, config: dict[str, Any]) -> None:
    """Write ``config`` to ``path`` atomically (the old file's permissions kept), never through a link."""
    if path.is_symlink():
        raise FlwrConfigError(f"{path} is a symbolic link: refusing to replace it; edit the file it "
                              f"points to ({os.readlink(path)}) or set FLWR_HOME to another directory")
    data = tomli_w.dumps(config).encode()
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def set_connection(path: Path, name: str, address: str, *, root_certificates: Path | None = None) -> None:
    """Set ``[superlink.<name>]`` in ``path``: TLS with ``root_certificates``, else insecure."""
    config = read_config(path)
    entry: dict[str, Any] = {"address": address}
    if root_certificates is None:
        entry["insecure"] = True
    else:
        entry["root-certificates"] = str(Path(root_certificates).resolve())
    config.setdefault("superlink", {})[name] = entry
    write_config(path, config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="the flwr CLI's config.toml ($FLWR_HOME/config.toml)")
    parser.add_argument("name", help="the connection's name ([superlink.NAME])")
    parser.add_argument("address", help="the SuperLink's host:port")
    tls = parser.add_mutually_exclusive_group(required=True)
    tls.add_argument("--insecure", action="store_true", help="no TLS (a demo on one machine only)")
    tls.add_argument("--root-certificates", type=Path, help="the CA certificate of the SuperLink's TLS")
    args = parser.parse_args()
    try:
        set_connection(args.config, args.name, args.address, root_certificates=args.root_certificates)
    except (FlwrConfigError, OSError) as err:
        sys.exit(f"flwr_config.py: {err}")


if __name__ == "__main__":
    main()
