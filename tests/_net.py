"""Real servers on 127.0.0.1 for the network-edge tests: raw HTTP (plain or TLS), a proxy, a certificate.

* :class:`Servers` starts servers and proxies for one test and closes them (a fixture's body).
* :class:`Server` accepts connections and runs ``handler(conn, server)`` for each in its own thread,
  after a TLS handshake when it has a certificate. :meth:`Server.read_request` reads one request
  (keep-alive aware), :func:`drip` sends bytes slowly. Everything stops on :meth:`Server.close`.
* :class:`Proxy` is a forward proxy: absolute-form requests are answered by a handler (so it can
  drip like an origin) and ``CONNECT`` is tunnelled to the target (or answered by a handler).
* :func:`certificate` makes a CA and a certificate for ``127.0.0.1`` it signed (``cryptography``, else
  a self-signed one with the ``openssl`` binary).
"""

from __future__ import annotations

import datetime
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Union

import pytest

Handler = Callable[[socket.socket, "Server"], None]


class Server:
    """A threaded raw-socket server on 127.0.0.1 (TLS when ``tls`` is a server context)."""

    def __init__(self, handler: Handler, tls: Optional[ssl.SSLContext] = None) -> None:
        self.handler = handler
        self.tls = tls
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.connections = 0
        self.requests: list[bytes] = []
        self._sockets: list[socket.socket] = []
        self._pending: dict[int, bytes] = {}
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name=f"test-server-{self.port}", daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            with self.lock:
                self.connections += 1
                self._sockets.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn.settimeout(5)
                conn = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
                with self.lock:
                    self._sockets.append(conn)  # the plain socket is detached now: close() needs this one
                conn.do_handshake()
            self.handler(conn, self)
        except (OSError, ValueError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def read_request(self, conn: socket.socket, timeout: float = 5.0) -> Optional[bytes]:
        """One request (head and Content-Length body); ``None`` when the client closed first."""
        conn.settimeout(timeout)
        data = self._pending.pop(id(conn), b"")
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            chunk = conn.recv(1 << 20)
            if not chunk:
                return None
            rest += chunk
        if rest[length:]:
            self._pending[id(conn)] = rest[length:]
        request = head + b"\r\n\r\n" + rest[:length]
        with self.lock:
            self.requests.append(request)
        return request

    def close(self) -> None:
        self.stop.set()
        self._acceptor.join(2)
        self.listener.close()
        with self.lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a handler blocked in recv (close alone does not)
            except (OSError, ValueError):
                pass
            try:
                sock.close()
            except OSError:
                pass
        for thread in self._threads:
            thread.join(2)


def drip(conn: socket.socket, data: bytes, interval: float, stop: threading.Event) -> None:
    """Send ``data`` one byte every ``interval`` seconds until done, the client goes away or ``stop``."""
    for i in range(len(data)):
        if stop.wait(interval):
            return
        try:
            conn.sendall(data[i : i + 1])
        except OSError:
            return


class Servers:
    """Starts servers (and proxies) and closes them all at the end of a test."""

    def __init__(self) -> None:
        self._made: list[Union[Server, Proxy]] = []

    def __call__(self, handler: Handler, tls: Optional[ssl.SSLContext] = None) -> Server:
        server = Server(handler, tls)
        self._made.append(server)
        return server

    def proxy(self, handler: Optional[Handler] = None, connect_reply: Optional[Handler] = None) -> Proxy:
        proxy = Proxy(handler, connect_reply)
        self._made.append(proxy)
        return proxy

    def close(self) -> None:
        for item in self._made:
            item.close()


class Proxy:
    """A forward proxy: answers absolute-form requests with ``handler``; tunnels ``CONNECT``."""

    def __init__(self, handler: Optional[Handler] = None, connect_reply: Optional[Handler] = None) -> None:
        self.seen: list[bytes] = []
        self._handler = handler
        self._connect_reply = connect_reply
        self.server = Server(self._serve)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def _serve(self, conn: socket.socket, server: Server) -> None:
        request = server.read_request(conn)
        if request is None:
            return
        self.seen.append(request.split(b"\r\n", 1)[0])
        if not request.startswith(b"CONNECT "):
            if self._handler is not None:
                self._handler(conn, server)
            return
        if self._connect_reply is not None:
            self._connect_reply(conn, server)
            return
        host, _, port = request.split(b" ")[1].decode().rpartition(":")
        upstream = socket.create_connection((host, int(port)), timeout=5)
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        pipe = threading.Thread(target=_pump, args=(upstream, conn, server.stop), daemon=True)
        pipe.start()
        _pump(conn, upstream, server.stop)
        pipe.join(2)
        upstream.close()

    def close(self) -> None:
        self.server.close()


def _pump(source: socket.socket, target: socket.socket, stop: threading.Event) -> None:
    source.settimeout(0.1)
    while not stop.is_set():
        try:
            chunk = source.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            break
        if not chunk:
            break
        try:
            target.sendall(chunk)
        except OSError:
            break
    try:
        target.shutdown(socket.SHUT_WR)
    except OSError:
        pass


class TLSFiles(NamedTuple):
    """A CA bundle to trust, and the server's certificate chain and key, for 127.0.0.1."""

    bundle: Path
    chain: Path
    key: Path


def certificate(directory: Path) -> TLSFiles:
    """A CA and a server certificate for 127.0.0.1 it signed (``cryptography``, else the ``openssl`` binary)."""
    files = TLSFiles(directory / "ca.pem", directory / "chain.pem", directory / "key.pem")
    try:
        _certificates_with_cryptography(files)
    except ImportError:
        try:
            subprocess.run(
                [
                    *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
                    *("-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
                    *("-keyout", str(files.key), "-out", str(files.chain)),
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
        except (OSError, subprocess.SubprocessError):
            pytest.skip("neither cryptography nor openssl is available to make a certificate")
        files.bundle.write_bytes(files.chain.read_bytes())
    return files


def _certificates_with_cryptography(files: TLSFiles) -> None:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def build(subject: str, key: Any, issuer: str, issuer_key: Any, ca: bool) -> Any:
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
            .add_extension(ski, False)
            .add_extension(aki, False)
        )
        if ca:
            usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
            builder = builder.add_extension(usage, True)
        else:
            address = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
            builder = builder.add_extension(x509.SubjectAlternativeName([address]), False)
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = build("segment-analytics test CA", ca_key, "segment-analytics test CA", ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = build("127.0.0.1", key, "segment-analytics test CA", ca_key, False)
    pem = serialization.Encoding.PEM
    files.bundle.write_bytes(ca.public_bytes(pem))
    files.chain.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    files.key.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def server_context(files: TLSFiles) -> ssl.SSLContext:
    """A server-side TLS context for :class:`Server`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(files.chain), str(files.key))
    return context


def elapsed_since(start: float) -> float:
    return time.monotonic() - start
