"""Who may see the dashboard, and what keeps other sites out (docs/dashboard.md, "Security").

- **A token, always.** It is compared in constant time; a page that gave it once (``?token=``
  or the login form) gets a session cookie instead, which is not the token but an HMAC of it,
  ``HttpOnly`` and ``SameSite=Strict`` (another site's page cannot send it), named after the
  port (cookies do not tell ports apart). Scripts may send ``Authorization: Bearer TOKEN``.
- **The Host header** must name this server (a loopback name, the bound address, or a name
  allowed by hand): a DNS-rebinding page, whose Host is its own name, gets 400 and nothing.
- **State-changing requests** (the login form) must come from this origin (``Origin``, and
  ``Sec-Fetch-Site`` when sent) and carry the CSRF value of the form, equal to the one in a
  ``SameSite=Strict`` cookie.
- **Headers** on every answer: a strict CSP (``default-src 'self'``, no inline script or
  style, ``frame-ancestors 'none'``), no sniffing, no referrer (but on the login form:
  ``same-origin``, else browsers send its POST with ``Origin: null``), no caching.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import socket
from collections.abc import Iterable
from typing import Any

__all__ = ["HEADERS", "Guard", "is_loopback", "is_wildcard"]

HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        b"frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]

_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server to this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    """Whether binding ``host`` listens on every interface."""
    return host in ("0.0.0.0", "::", "")  # noqa: S104 - this is the test for it


def _own_names() -> set[str]:
    """This machine's host name, its full name and the addresses they resolve to."""
    names = {socket.gethostname().lower(), socket.getfqdn().lower()}
    try:
        _, aliases, addresses = socket.gethostbyname_ex(socket.gethostname())
    except OSError:  # a name that does not resolve: the names alone
        return names
    return names | {a.lower() for a in aliases} | set(addresses)


def _host_name(header: str) -> str:
    """The name part of a Host header (``[::1]:8787`` -> ``::1``), lowercased."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Guard:
    """The checks of one dashboard server, bound to ``host:port`` with ``token``."""

    def __init__(self, token: str, *, host: str, port: int, allowed_hosts: Iterable[str] = ()):
        if not isinstance(token, str) or len(token) < 16:  # type: ignore[redundant-expr]
            raise ValueError(
                "the dashboard's token must be a string of 16 characters or more; leave it "
                "out to have one made (secrets.token_urlsafe)"
            )
        self._token = token.encode()
        self._session = hmac.new(self._token, b"undertow dashboard session", hashlib.sha256)
        self.port = port
        self.cookie = f"undertow_dashboard_{port}"
        self.csrf_cookie = f"undertow_dashboard_csrf_{port}"
        names = {*_LOOPBACK_NAMES, host.lower(), *(h.lower() for h in allowed_hosts)}
        if is_wildcard(host):  # every interface: this machine's names and addresses too
            names |= _own_names()
        self.hosts = frozenset(names)

    def session_value(self) -> str:
        """What the session cookie holds: an HMAC of the token, not the token."""
        return self._session.hexdigest()

    def host_ok(self, headers: dict[str, str]) -> bool:
        """Whether the Host header names this server."""
        return _host_name(headers.get("host", "")) in self.hosts

    def token_ok(self, given: str | None) -> bool:
        """Whether ``given`` is the token (constant time)."""
        return given is not None and hmac.compare_digest(given.encode(), self._token)

    def authenticated(self, headers: dict[str, str], cookies: dict[str, str]) -> bool:
        """A session cookie or a bearer token that is right."""
        cookie = cookies.get(self.cookie)
        if cookie is not None and hmac.compare_digest(
            cookie.encode(), self.session_value().encode()
        ):
            return True
        scheme, _, given = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(given.strip())

    def same_origin(self, headers: dict[str, str]) -> bool:
        """Whether a state-changing request comes from a page of this server: its Origin
        names this server, and its fetch metadata (when the browser sends it) says
        same-origin. A request without an Origin is refused (browsers send one on POST; the
        login page's referrer policy, ``same-origin``, keeps it from being ``null``)."""
        site = headers.get("sec-fetch-site")
        if site is not None and site != "same-origin":
            return False
        origin = headers.get("origin", "")
        scheme, _, rest = origin.partition("://")
        return scheme == "http" and _host_name(rest) in self.hosts and rest == headers.get("host")

    def csrf_ok(self, cookies: dict[str, str], given: str | None) -> bool:
        """Whether the form's CSRF value equals its cookie's (double submit)."""
        expected = cookies.get(self.csrf_cookie)
        return bool(expected and given) and hmac.compare_digest(
            str(expected).encode(), str(given).encode()
        )

    def session_cookie(self) -> dict[str, Any]:
        """Arguments of ``Response.set_cookie`` for the session cookie."""
        return _cookie(self.cookie, self.session_value())

    def new_csrf_cookie(self) -> tuple[str, dict[str, Any]]:
        """A new CSRF value, and the cookie that holds it."""
        value = secrets.token_urlsafe(24)
        return value, _cookie(self.csrf_cookie, value)


def _cookie(name: str, value: str) -> dict[str, Any]:
    return {
        "key": name,
        "value": value,
        "httponly": True,
        "samesite": "strict",
        "path": "/",
    }
