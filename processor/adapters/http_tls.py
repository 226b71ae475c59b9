"""Client certificates (mutual TLS) for the ``http`` adapter: ``tls: {cert, key}``.

::

    tls:
      cert: /etc/cancel-processor/vendor-client.pem   # PEM: the client certificate (and chain)
      key: /etc/cancel-processor/vendor-client.key    # PEM: its private key, unencrypted

Both files are read at start-up (so ``cancel-processor check`` and ``run`` refuse a missing or
unreadable file, naming the option and the file) and loaded together into a TLS context, which
proves they are PEM and that the key belongs to the certificate. An encrypted key is refused:
nothing could type its passphrase. The pair is sent to the vendor and to an OAuth2 token endpoint
when either asks for it during the handshake.

A vendor that rejects the certificate ends the handshake with an alert; that proves nothing was
acted upon, so :func:`client_cert_refused` tells the adapter to answer a definite error that names
the option (the certificate will not be accepted by trying again).
"""

from __future__ import annotations

import ssl
from typing import Any

from processor.adapters.base import AdapterError
from processor.adapters.http_values import Options

__all__ = ["client_cert", "client_cert_refused"]

# OpenSSL's reasons for a server's alert about the client's certificate.
_REFUSED = (
    "CERTIFICATE_REQUIRED",
    "BAD_CERTIFICATE",
    "UNKNOWN_CA",
    "CERTIFICATE_UNKNOWN",
    "CERTIFICATE_EXPIRED",
    "CERTIFICATE_REVOKED",
    "UNSUPPORTED_CERTIFICATE",
    "ACCESS_DENIED",
)


def client_cert(raw: Any) -> tuple[str, str] | None:
    """``tls`` as requests' ``cert`` pair, checked; None when absent. Raises AdapterError."""
    if raw is None:
        return None
    o = Options(raw, "tls.")
    cert, key = o.text("cert"), o.text("key")
    o.done()
    for name, path in (("cert", cert), ("key", key)):
        try:
            with open(path, "rb") as handle:
                handle.read(1)
        except OSError as exc:
            raise AdapterError(
                f"option 'tls.{name}': the file {path} cannot be read ({exc.strerror})"
            ) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise AdapterError(
            f"option 'tls': {cert} and {key} are not a PEM certificate and its unencrypted "
            f"private key ({reason})"
        ) from None
    return cert, key


def _no_passphrase() -> str:
    raise ValueError("the private key is encrypted")


def client_cert_refused(exc: BaseException) -> str | None:
    """The alert's reason when the vendor refused our client certificate, else None."""
    pending, seen = [exc], 0
    while pending and seen < 16:
        err = pending.pop()
        seen += 1
        if isinstance(err, ssl.SSLError) and not isinstance(err, ssl.SSLCertVerificationError):
            reason = str(getattr(err, "reason", None) or "")
            if any(word in reason for word in _REFUSED):
                return reason
        links = (*err.args, getattr(err, "reason", None), err.__cause__)
        pending.extend(link for link in links if isinstance(link, BaseException))
    return None
