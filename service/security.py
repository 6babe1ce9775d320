"""Transport security: TLS on the gRPC port and the HTTP ports, mTLS when a client CA is set.

The certificate, key and client CA files are re-read when they change, checked at most every
`settings.tls_reload_s` and only when a connection is being set up, so a renewed certificate is
used for new connections without a restart; connections already open keep theirs. A change that
does not make a valid pair (a new certificate whose key is not written yet) is logged and the
previous certificate stays in use until the files change again.

At start-up a file that cannot be used is a LatentwatchError with a one-line message, before
anything binds.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from latentwatch.errors import LatentwatchError, quote
from latentwatch.service.settings import Settings

log = logging.getLogger(__name__)

# What identifies one version of a file without reading it: a rewrite or a rename changes it.
FileStamp = tuple[int, int, int] | None  # (inode, size, mtime in ns); None: no such file


@dataclass(frozen=True)
class CertificateFiles:
    """One reading of the files, checked: the key belongs to the first certificate."""

    cert_chain: bytes  # PEM, the server certificate first
    private_key: bytes  # PEM, unencrypted
    client_ca: bytes | None  # PEM bundle; None: clients are not asked for a certificate
    not_after: datetime  # the server certificate expires then (UTC)


def _stamp(path: Path) -> FileStamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _read(setting: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise LatentwatchError(f"{setting} {quote(path)}: cannot read ({err.strerror})") from err


def _certificates(setting: str, path: Path, data: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as err:
        raise LatentwatchError(
            f"{setting} {quote(path)}: not a PEM certificate ({err})"
        ) from err


def _public_der(key: Any) -> bytes:
    return bytes(key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ))


def read_certificates(cert: Path, key: Path, client_ca: Path | None) -> CertificateFiles:
    """Reads and checks the files; LatentwatchError names the file and what is wrong."""
    chain = _read("tls_cert", cert)
    key_pem = _read("tls_key", key)
    ca_pem = None if client_ca is None else _read("tls_client_ca", client_ca)
    leaf = _certificates("tls_cert", cert, chain)[0]
    try:
        private_key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as err:  # encrypted: there is no setting for a password
        raise LatentwatchError(
            f"tls_key {quote(key)}: encrypted private keys are not supported"
        ) from err
    except (ValueError, UnsupportedAlgorithm) as err:
        raise LatentwatchError(f"tls_key {quote(key)}: not a PEM private key") from err
    if _public_der(private_key.public_key()) != _public_der(leaf.public_key()):
        raise LatentwatchError(
            f"tls_key {quote(key)} is not the key of the certificate in tls_cert {quote(cert)}"
        )
    if client_ca is not None and ca_pem is not None:
        _certificates("tls_client_ca", client_ca, ca_pem)
    return CertificateFiles(chain, key_pem, ca_pem, leaf.not_valid_after_utc)


class CertificateSource:
    """The current certificate files, re-read when they change (checked every `reload_s`).

    Thread-safe: gRPC asks from its own threads, the HTTP servers from theirs.
    """

    def __init__(
        self, cert: Path, key: Path, client_ca: Path | None, reload_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._paths: tuple[Path, Path, Path | None] = (cert, key, client_ca)
        self._reload_s = reload_s
        self._clock = clock
        self._lock = threading.Lock()
        self._stamps = self._stamp_all()
        self._current = read_certificates(cert, key, client_ca)
        self._checked_at = clock()
        _warn_if_expired(self._current, cert)

    def _stamp_all(self) -> tuple[FileStamp, ...]:
        return tuple(None if p is None else _stamp(p) for p in self._paths)

    @property
    def cert_path(self) -> Path:
        return self._paths[0]

    @property
    def key_path(self) -> Path:
        return self._paths[1]

    @property
    def requires_client_certificate(self) -> bool:
        return self._paths[2] is not None

    def latest(self) -> CertificateFiles:
        """The files as last read; re-read first when `reload_s` has passed and they changed."""
        with self._lock:
            now = self._clock()
            if now - self._checked_at < self._reload_s:
                return self._current
            self._checked_at = now
            stamps = self._stamp_all()
            if stamps == self._stamps:
                return self._current
            self._stamps = stamps  # a bad change is logged once, then tried again on the next
            cert, key, client_ca = self._paths
            try:
                fresh = read_certificates(cert, key, client_ca)
            except LatentwatchError as err:
                log.error("certificate files changed but cannot be used, keeping the "
                          "previous ones: %s", err)
                return self._current
            if fresh != self._current:
                log.info("certificate files changed: new connections use %s (expires %s)",
                         quote(cert), fresh.not_after.isoformat())
                _warn_if_expired(fresh, cert)
                self._current = fresh
            return self._current


def _warn_if_expired(files: CertificateFiles, cert: Path) -> None:
    if files.not_after <= datetime.now(UTC):
        log.warning("tls_cert %s expired at %s: clients will refuse it",
                    quote(cert), files.not_after.isoformat())


def certificate_source(settings: Settings) -> CertificateSource | None:
    """The settings' certificate files, or None when TLS is off (no tls_cert)."""
    if settings.tls_cert is None and settings.tls_key is None:
        if settings.tls_client_ca is not None:
            raise LatentwatchError("tls_client_ca needs tls_cert and tls_key (TLS is off)")
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        missing = "tls_key" if settings.tls_key is None else "tls_cert"
        raise LatentwatchError(f"TLS needs both tls_cert and tls_key; {missing} is not set")
    return CertificateSource(
        settings.tls_cert, settings.tls_key, settings.tls_client_ca, settings.tls_reload_s
    )


def _grpc_configuration(files: CertificateFiles) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(files.private_key, files.cert_chain)], root_certificates=files.client_ca
    )


def grpc_server_credentials(source: CertificateSource) -> grpc.ServerCredentials:
    """Credentials for `add_secure_port` that pick up changed files for new connections."""
    served = [source.latest()]

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        # gRPC calls this from its own threads as each connection is set up; None: no change.
        try:
            files = source.latest()
            if files is served[0]:
                return None
            served[0] = files
            return _grpc_configuration(files)
        except Exception:  # an exception would be lost in gRPC's core: keep the old config
            log.exception("cannot reload the gRPC certificate")
            return None

    return grpc.dynamic_ssl_server_credentials(
        _grpc_configuration(served[0]), fetch,
        require_client_authentication=source.requires_client_certificate,
    )


def _ssl_context(source: CertificateSource, files: CertificateFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # load_cert_chain reads paths only; OpenSSL checks again that the key fits the certificate.
    context.load_cert_chain(source.cert_path, source.key_path)
    if files.client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=files.client_ca.decode("ascii", "replace"))
    return context


def http_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The context HTTP servers wrap accepted sockets with, or None when TLS is off.

    Every handshake starts on the returned context; its SNI callback (which OpenSSL runs on
    every ClientHello, with or without a server name) moves the connection to a context built
    from the newest files, so changed certificates reach new connections here too.
    """
    source = certificate_source(settings)
    if source is None:
        return None
    try:
        base = _ssl_context(source, source.latest())
    except (ssl.SSLError, OSError) as err:
        raise LatentwatchError(f"tls_cert/tls_key: cannot be used for HTTPS ({err})") from err
    lock = threading.Lock()
    newest: list[tuple[CertificateFiles, ssl.SSLContext]] = [(source.latest(), base)]

    def use_newest(sock: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                   _context: ssl.SSLContext) -> None:
        files = source.latest()
        with lock:
            if files is not newest[0][0]:
                try:
                    newest[0] = (files, _ssl_context(source, files))
                except (ssl.SSLError, OSError) as err:  # changed again since it was read
                    log.error("cannot reload the HTTPS certificate: %s", err)
            context = newest[0][1]
        if context is not base:
            sock.context = context

    base.sni_callback = use_newest
    return base
