"""Optional bearer-token auth: gRPC metadata ``authorization: Bearer <token>``.

When the server config has a token, every call to ``decal.v1.BatchService`` without the
right token ends with UNAUTHENTICATED before the servicer runs; the standard health service
stays open (load balancers and orchestrators probe it without credentials). Tokens are
compared in constant time.
"""

from __future__ import annotations

import hmac
import logging
from typing import Callable

import grpc

__all__ = ["TokenAuthInterceptor", "bearer_metadata", "check_bearer", "METADATA_KEY", "OPEN_SERVICES"]

log = logging.getLogger("decal.server")

METADATA_KEY = "authorization"
OPEN_SERVICES = ("/grpc.health.v1.Health/",)


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata a client sends."""
    return ((METADATA_KEY, f"Bearer {token}"),) if token else ()


def check_bearer(header: str | None, token: str) -> str | None:
    """None if ``header`` (the metadata / HTTP header value) carries ``token``, else why not."""
    if not header:
        return f"{METADATA_KEY}: missing; this server needs 'Bearer <token>'"
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        return f"{METADATA_KEY}: expected 'Bearer <token>'"
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return f"{METADATA_KEY}: invalid token"
    return None


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Refuse calls without the configured token (UNAUTHENTICATED, the reason in details)."""

    def __init__(self, token: str, on_reject: Callable[[str], None] | None = None) -> None:
        self._token = token
        self._on_reject = on_reject

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method or ""
        if method.startswith(OPEN_SERVICES):
            return continuation(handler_call_details)
        header = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == METADATA_KEY:
                header = value
                break
        problem = check_bearer(header, self._token)
        handler = continuation(handler_call_details)
        if problem is None or handler is None:
            return handler
        if self._on_reject is not None:
            self._on_reject("UNAUTHENTICATED")

        def abort(request, context):
            log.warning("stream rejected for %s: UNAUTHENTICATED: %s (%s)", context.peer(), problem, method)
            context.abort(grpc.StatusCode.UNAUTHENTICATED, problem)

        if handler.response_streaming and not handler.request_streaming:
            return grpc.unary_stream_rpc_method_handler(
                abort, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
            )
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                abort, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
            )
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(
                abort, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
            )
        return grpc.unary_unary_rpc_method_handler(
            abort, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )
