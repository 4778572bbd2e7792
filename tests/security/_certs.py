"""A throw-away certificate authority for TLS tests, made with the ``openssl`` command."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Certificates", "make_certificates", "openssl_available"]


def openssl_available() -> bool:
    """Whether the ``openssl`` command exists."""
    return shutil.which("openssl") is not None


@dataclass(frozen=True)
class Certificates:
    """Paths of the CA certificate, the server's and a client's certificate and key."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing of the above


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    _run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
         f"/CN={name}", "-keyout", str(key), "-out", str(cert), cwd=directory)  # fmt: skip
    return cert, key


def _leaf(directory: Path, name: str, ca: tuple[Path, Path], ext: str) -> tuple[Path, Path]:
    key, csr, cert = (directory / f"{name}.{s}" for s in ("key", "csr", "pem"))
    ext_file = directory / f"{name}.ext"
    ext_file.write_text(ext)
    _run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(key),
         "-out", str(csr), cwd=directory)  # fmt: skip
    _run("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
         "-CAcreateserial", "-days", "2", "-extfile", str(ext_file), "-out", str(cert),
         cwd=directory)  # fmt: skip
    return cert, key


def make_certificates(directory: Path) -> Certificates:
    """A CA, a server certificate for ``127.0.0.1``/``localhost`` and a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "ionveil-test-ca")
    other, _ = _ca(directory, "unrelated-ca")
    server = _leaf(
        directory,
        "server",
        ca,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    client = _leaf(directory, "client", ca, "extendedKeyUsage=clientAuth\n")
    return Certificates(ca[0], server[0], server[1], client[0], client[1], other)
