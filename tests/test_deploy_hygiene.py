"""Deployment credentials: private keys owner-only from creation, certificates a strict verifier accepts."""

from __future__ import annotations

import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest

from deploy.credentials import write_certificates, write_supernode_keys
from deploy.flwr_config import FlwrConfigError, set_connection


def test_private_keys_are_owner_only(tmp_path: Path) -> None:
    """Private keys are written owner-only (0600), whatever the umask."""
    old = os.umask(0o022)
    try:
        write_certificates(tmp_path / "certs", ["127.0.0.1", "localhost"])
        write_supernode_keys(tmp_path / "keys", ["sn0"])
    finally:
        os.umask(old)
    for path in (tmp_path / "certs" / "server.key", tmp_path / "keys" / "sn0"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((tmp_path / "keys" / "sn0.pub").stat().st_mode) == 0o644


def test_a_strict_x509_verifier_accepts_the_server_certificate(tmp_path: Path) -> None:
    """The certificates lacked keyUsage / SKI / AKI / EKU, which VERIFY_X509_STRICT (the default
    from Python 3.13) requires: a TLS handshake with strict verification now succeeds."""
    certs = tmp_path / "certs"
    write_certificates(certs, ["127.0.0.1", "localhost"])
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certs / "server.pem", certs / "server.key")
    client_ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    errors: list[Exception] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError) as err:
            errors.append(err)

    thread = threading.Thread(target=serve)
    thread.start()
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.version() is not None
        tls.sendall(b"x")
    thread.join(timeout=10)
    listener.close()
    assert not errors


SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "localhost.sh"


def test_localhost_script_checks_its_pid_files(tmp_path: Path) -> None:
    """stop killed whatever PID its files held; start had no double-start guard (row 12)."""
    pids = tmp_path / "pids"
    pids.mkdir()
    env = {**os.environ, "DEPLOY_DIR": str(tmp_path)}
    foreign = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "flower-superlink"])
    try:
        (pids / "sn0.pid").write_text(str(foreign.pid))  # a reused PID: not ours
        done = subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, text=True)
        assert "is not a running Flower process" in done.stderr and foreign.poll() is None
        (pids / "superlink.pid").write_text(str(running.pid))  # one of ours is still up
        done = subprocess.run(["bash", str(SCRIPT), "start", "--insecure"], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 1 and "already running" in done.stderr
    finally:
        foreign.kill()
        running.kill()


USER_CONFIG = """[superlink]
default = "mine"

[superlink.mine]
address = "10.0.0.5:9093"
root-certificates = "/etc/ca.crt"

[superlink.rabo-local]
address = "127.0.0.1:1"
insecure = true
stale-key = 1

[superlink.local]
address = ":local:"
options.num-supernodes = 4
"""


def test_flwr_config_sets_one_connection_and_keeps_the_rest(tmp_path: Path) -> None:
    """Parsed and written as TOML: one table is replaced,
    every other table and key stays, and writing the same entry again gives the same bytes."""
    path = tmp_path / "config.toml"
    path.write_text(USER_CONFIG)
    path.chmod(0o600)
    set_connection(path, "rabo-local", "127.0.0.1:9200", root_certificates=tmp_path / "ca.crt")
    before, after = tomllib.loads(USER_CONFIG), tomllib.loads(path.read_text())
    assert after["superlink"].pop("rabo-local") == {"address": "127.0.0.1:9200",
                                                    "root-certificates": str(tmp_path / "ca.crt")}
    before["superlink"].pop("rabo-local")
    assert after == before
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    written = path.read_bytes()
    set_connection(path, "rabo-local", "127.0.0.1:9200", root_certificates=tmp_path / "ca.crt")
    assert path.read_bytes() == written
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]  # no temporary file left


def test_flwr_config_starts_from_flwrs_default(tmp_path: Path) -> None:
    path = tmp_path / "home" / "config.toml"
    set_connection(path, "rabo-local", "127.0.0.1:9200")
    assert tomllib.loads(path.read_text())["superlink"] == {
        "default": "local", "supergrid": {"address": "api.flower.ai"}, "local": {"address": ":local:"},
        "rabo-local": {"address": "127.0.0.1:9200", "insecure": True}}


def test_flwr_config_refuses_a_malformed_file_and_a_link(tmp_path: Path) -> None:
    """One message naming the file, the file left as it was; a planted link is not written through."""
    path = tmp_path / "config.toml"
    path.write_text('[superlink\ndefault = "local"\n')
    script = Path(__file__).resolve().parents[1] / "deploy" / "flwr_config.py"
    done = subprocess.run([sys.executable, str(script), str(path), "rabo-local", "127.0.0.1:9200",
                           "--insecure"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith(f"flwr_config.py: {path} is not valid TOML (")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert path.read_text() == '[superlink\ndefault = "local"\n'
    target = tmp_path / "elsewhere.toml"
    target.write_text(USER_CONFIG)
    link = tmp_path / "linked.toml"
    link.symlink_to(target)
    with pytest.raises(FlwrConfigError, match="is a symbolic link: refusing to replace it"):
        set_connection(link, "rabo-local", "127.0.0.1:9200")
    assert target.read_text() == USER_CONFIG and link.is_symlink()
