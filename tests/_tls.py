"""Throwaway certificates for TLS tests: a certificate authority and a server certificate made
at test time (trustme), written as PEM files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files of one test's TLS: the authority clients trust, and the server's
    certificate chain and key."""

    ca: str
    cert: str
    key: str


def make_tls(directory: Path, *names: str, ca: trustme.CA | None = None) -> TlsFiles:
    """A certificate for ``names`` (default: 127.0.0.1 and localhost) signed by ``ca`` (a new
    authority if None), written into ``directory``."""
    authority = ca or trustme.CA()
    issued = authority.issue_cert(*(names or ("127.0.0.1", "localhost")))
    tag = "-".join(names or ("local",)).replace(":", "_")
    files = TlsFiles(
        ca=str(directory / f"ca-{tag}.pem"),
        cert=str(directory / f"cert-{tag}.pem"),
        key=str(directory / f"key-{tag}.pem"),
    )
    authority.cert_pem.write_to_path(files.ca)
    issued.cert_chain_pems[0].write_to_path(files.cert)
    for extra in issued.cert_chain_pems[1:]:  # the chain, if the authority is not the root
        extra.write_to_path(files.cert, append=True)
    issued.private_key_pem.write_to_path(files.key)
    return files
