"""Authentication, signed messages and authorization rules. Pure: no sockets.

See docs/security.md for the model: who is protected from whom, and how to deploy.
"""

from undertow.security._rules import AuthRule, allow, authenticated
from undertow.security._seal import (
    DEFAULT_WINDOW,
    ENVELOPE_MAGIC,
    ClientSeal,
    ReplayWindow,
    ServerSeal,
    envelope_size,
    strip_envelope,
)
from undertow.security._stream import (
    HELLO,
    TAG_SIZE,
    StreamSession,
    bad_tag,
    client_session,
    server_hello,
)
from undertow.security._tokens import (
    CONFIG_FILE,
    TOKEN_ENV,
    TOKENS_ENV,
    Authenticator,
    SigningKey,
    TokenAuth,
    client_key,
    config_path,
    find_client_token,
    new_token,
    parse_token,
)
from undertow.security._user import (
    USER_TOKEN_FILE,
    user_auth,
    user_proof,
    user_token,
    user_token_path,
)

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_WINDOW",
    "ENVELOPE_MAGIC",
    "HELLO",
    "TAG_SIZE",
    "TOKENS_ENV",
    "TOKEN_ENV",
    "USER_TOKEN_FILE",
    "AuthRule",
    "Authenticator",
    "ClientSeal",
    "ReplayWindow",
    "ServerSeal",
    "SigningKey",
    "StreamSession",
    "TokenAuth",
    "allow",
    "authenticated",
    "bad_tag",
    "client_key",
    "client_session",
    "config_path",
    "envelope_size",
    "find_client_token",
    "new_token",
    "parse_token",
    "server_hello",
    "strip_envelope",
    "user_auth",
    "user_proof",
    "user_token",
    "user_token_path",
]
