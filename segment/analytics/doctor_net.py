"""The doctor's checks of the way to the Tracking API: key, host URL, proxy, CA bundle, DNS, TCP, TLS.

Each check is a small function returning a :class:`Check`; none raises. They follow the order of the
outage playbook in README ("Are my events arriving?"): configuration first, then the network from
the bottom up. When a proxy is in use the DNS and TCP checks look at the proxy (that is where the
client connects) and TLS to the API is left to the test event, which goes through the tunnel.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit

import requests

from segment.analytics.transport import Transport, _is_loopback
from segment.analytics.wire import DEFAULT_HOST, batch_url

__all__ = ["FAIL", "OK", "SKIP", "WARN", "Check", "Target", "check_ca_bundle", "check_dns", "check_host"]

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"


@dataclass
class Check:
    """One finding: ``status`` is ok, warn, fail or skip; ``summary`` one line; ``advice`` what to do."""

    name: str
    status: str
    summary: str
    advice: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        return {
            "name": self.name,
            "status": self.status,
            "summary": self.summary,
            "advice": self.advice,
            "details": self.details,
        }


@dataclass
class Target:
    """Where the client sends: the batch URL, and the host and port it connects to (the proxy's, if any)."""

    url: str
    scheme: str
    hostname: str
    port: int
    proxy: Optional[str] = None  # the proxy URL, credentials masked
    proxy_password: Optional[str] = field(default=None, repr=False)  # kept out of every output
    connect_host: str = ""
    connect_port: int = 0


def masked(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def check_write_key(write_key: Optional[str], source: str) -> Check:
    """Is there a key, and does it look like one (never shown: only where it came from and its length)."""
    if not write_key:
        return Check(
            "write key",
            FAIL,
            "no write key",
            "pass --write-key KEY or set SEGMENT_WRITE_KEY (Sources > your source > Settings > API Keys)",
        )
    details = {"source": source, "length": len(write_key)}
    summary = f"present (from {source}, {len(write_key)} characters; never printed)"
    if write_key != write_key.strip():
        return Check(
            "write key", WARN, summary + ", with spaces around it", "remove the spaces: the API rejects it", details
        )
    if any(ord(c) < 33 or ord(c) > 126 for c in write_key):
        return Check("write key", WARN, summary + ", with unusual characters", "copy it again from Segment", details)
    return Check("write key", OK, summary, details=details)


def check_host(host: Optional[str]) -> tuple[Check, Optional[Target]]:
    """Is the host URL usable; where events go, and through which proxy (from the environment)."""
    given = host or DEFAULT_HOST
    url = batch_url(host)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return Check("host", FAIL, f"{given!r} is not a valid URL: {exc}", "use e.g. https://api.segment.io"), None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return (
            Check("host", FAIL, f"{given!r} is not an http(s) URL with a host name", "use e.g. https://api.segment.io"),
            None,
        )
    port = port or (443 if parts.scheme == "https" else 80)
    target = Target(url, parts.scheme, parts.hostname, port, connect_host=parts.hostname, connect_port=port)
    transport = Transport(host, 1.0)  # reads the proxy settings exactly as a client's transport does
    transport.close()
    proxy = requests.utils.select_proxy(url, transport.proxies) if transport.proxies else None
    if proxy:
        proxy_parts = urlsplit(proxy if "://" in proxy else "http://" + proxy)
        target.proxy = masked(proxy)
        target.proxy_password = proxy_parts.password
        target.connect_host = proxy_parts.hostname or ""
        target.connect_port = proxy_parts.port or (443 if proxy_parts.scheme == "https" else 80)
    details = {"host": given, "url": url, "proxy": target.proxy}
    summary = f"POST {url}" + (f" through the proxy {target.proxy}" if target.proxy else "")
    path = urlsplit(given).path.rstrip("/")
    if path:
        advice = f"drop the path {path!r}: the client adds /v1/batch itself"
        return Check("host", WARN, summary, advice, details), target
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        return Check("host", WARN, summary + " (plain http: unencrypted)", "use https", details), target
    return Check("host", OK, summary, details=details), target


def ca_bundle() -> tuple[str, str]:
    """The CA bundle the client's transport verifies with, and where that choice comes from."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        value = os.environ.get(name)
        if value:
            return value, name
    return str(requests.utils.DEFAULT_CA_BUNDLE_PATH), "requests' default (certifi)"


def check_ca_bundle(target: Target) -> Check:
    """The CA bundle in use, and whether it can be read."""
    if target.scheme != "https":
        return Check("CA bundle", SKIP, "plain http: no TLS")
    path, source = ca_bundle()
    details = {"path": path, "source": source}
    if not os.path.exists(path):
        return Check("CA bundle", FAIL, f"{path} (from {source}) does not exist", _CA_ADVICE, details)
    try:
        _context(path)
    except (OSError, ssl.SSLError, ValueError) as exc:
        return Check("CA bundle", FAIL, f"{path} (from {source}) cannot be used: {exc}", _CA_ADVICE, details)
    return Check("CA bundle", OK, f"{path} (from {source})", details=details)


def _context(path: str) -> ssl.SSLContext:
    """A client context verifying with the bundle at ``path`` (a file or a directory of hashed certificates)."""
    if os.path.isdir(path):
        return ssl.create_default_context(capath=path)
    return ssl.create_default_context(cafile=path)


_CA_ADVICE = "point REQUESTS_CA_BUNDLE at a PEM file of trusted CAs, or unset it to use certifi's bundle"


def _in_thread(timeout: float, call: Any) -> Any:
    """``call()`` in a daemon thread, waited for at most ``timeout`` seconds (getaddrinfo has no timeout)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            box["error"] = exc

    thread = threading.Thread(target=run, name="segment-doctor-dns", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout:g}s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def check_dns(target: Target, timeout: float) -> tuple[Check, list[str]]:
    """Resolve the host the client connects to (the proxy's when there is one)."""
    host = target.connect_host
    what = "the proxy " + host if target.proxy else host
    started = time.monotonic()
    try:
        infos = _in_thread(timeout, lambda: socket.getaddrinfo(host, target.connect_port, type=socket.SOCK_STREAM))
    except (OSError, TimeoutError) as exc:
        advice = "check the spelling of the host, this machine's DNS settings (/etc/resolv.conf) and its egress"
        return Check("DNS", FAIL, f"{what} does not resolve: {exc}", advice, {"host": host}), []
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    ms = (time.monotonic() - started) * 1000
    details = {"host": host, "addresses": addresses, "ms": round(ms, 1)}
    return Check("DNS", OK, f"{what} -> {', '.join(addresses[:4])} ({ms:.0f} ms)", details=details), addresses


def check_tcp(target: Target, addresses: list[str], timeout: float) -> tuple[Check, Optional[str]]:
    """Open a TCP connection to the first address that answers."""
    port = target.connect_port
    failures = []
    for address in addresses[:3]:
        started = time.monotonic()
        try:
            with socket.create_connection((address, port), timeout=timeout):
                ms = (time.monotonic() - started) * 1000
                details = {"address": address, "port": port, "ms": round(ms, 1)}
                return Check("TCP", OK, f"connected to {address} port {port} ({ms:.0f} ms)", details=details), address
        except OSError as exc:
            kind = "refused" if isinstance(exc, ConnectionRefusedError) else "timeout" if _is_timeout(exc) else "error"
            failures.append({"address": address, "kind": kind, "error": str(exc) or type(exc).__name__})
    first = failures[0] if failures else {"kind": "error", "error": "no address"}
    if first["kind"] == "refused":
        advice = "nothing listens there: check the port in the host URL, the proxy address, or a local firewall"
    elif first["kind"] == "timeout":
        advice = f"no answer within {timeout:g}s: an egress firewall may drop outbound traffic to port {port}"
    else:
        advice = "check routing and firewall rules from this machine"
    summary = f"cannot connect to {target.connect_host} port {port}: {first['kind']} ({first['error']})"
    return Check("TCP", FAIL, summary, advice, {"attempts": failures}), None


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, (socket.timeout, TimeoutError))


def check_tls(target: Target, address: Optional[str], timeout: float) -> Check:
    """Handshake as the client would (same CA bundle, SNI, hostname check); the certificate in words."""
    if target.scheme != "https":
        return Check("TLS", SKIP, "plain http: no TLS")
    if target.proxy:
        return Check("TLS", SKIP, "through the proxy's tunnel: the test event checks it")
    if address is None:
        return Check("TLS", SKIP, "no TCP connection")
    path, source = ca_bundle()
    try:
        context = _context(path)
        with socket.create_connection((address, target.port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=target.hostname) as tls:
                cert = tls.getpeercert() or {}
                version = tls.version()
    except ssl.SSLCertVerificationError as exc:
        reason = exc.verify_message or str(exc)
        advice = (
            f"the certificate is not trusted by {path} (from {source}): check the system clock; behind a "
            "TLS-inspecting proxy, set REQUESTS_CA_BUNDLE to a bundle holding its CA"
        )
        return Check("TLS", FAIL, f"certificate not accepted: {reason}", advice, {"ca_bundle": path})
    except (OSError, ssl.SSLError, ValueError) as exc:
        advice = "something in between speaks no TLS or cuts the handshake (a proxy? the wrong port?)"
        return Check("TLS", FAIL, f"handshake failed: {exc}", advice, {"ca_bundle": path})
    details = _describe_cert(cert)
    details["version"] = version
    days = details.get("days_left")
    summary = f"{version}; subject {details['subject']}; issuer {details['issuer']}; expires {details['expires']}"
    if isinstance(days, int) and days < 14:
        return Check("TLS", WARN, summary + f" ({days} days left)", "the certificate expires soon", details)
    return Check("TLS", OK, summary + (f" ({days} days left)" if days is not None else ""), details=details)


def _describe_cert(cert: dict[str, Any]) -> dict[str, Any]:
    def name(rdns: Any) -> str:
        fields = {key: value for rdn in rdns or () for key, value in rdn}
        parts = [f"{key}={fields[key]}" for key in ("commonName", "organizationName") if key in fields]
        return ", ".join(parts).replace("commonName", "CN").replace("organizationName", "O") or "?"

    expires = cert.get("notAfter")
    days_left: Optional[int] = None
    if isinstance(expires, str):
        try:
            days_left = int((ssl.cert_time_to_seconds(expires) - time.time()) // 86400)
        except ValueError:
            pass
    names = [value for kind, value in cert.get("subjectAltName", ()) if kind in ("DNS", "IP Address")]
    return {
        "subject": name(cert.get("subject")),
        "issuer": name(cert.get("issuer")),
        "expires": expires or "?",
        "days_left": days_left,
        "names": names[:10],
    }
