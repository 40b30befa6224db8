"""RemoteLoader against a scripted gRPC server: it retries only transient failures, counts a
stream that dies after its header as a failure (no retry forever), and fails at once with
the server's message on a permanent status."""

from __future__ import annotations

import contextlib
import threading
from concurrent import futures
from typing import Iterator

import grpc
import pytest

from decal.proto import decal_pb2 as pb
from decal.server.remote_loader import RemoteLoader, RemoteLoaderError, is_transient
from decal.server.wire import SERVICE_NAME


class ScriptedService:
    """StreamBatches sends a header, then ends with ``code``/``details``; counts attempts."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        self.attempts = 0
        self._lock = threading.Lock()

    def stream(self, request: pb.StreamRequest, context: grpc.ServicerContext) -> Iterator[pb.StreamResponse]:
        with self._lock:
            self.attempts += 1
        header = pb.StreamHeader(
            stream_id="s", position=pb.Position(epoch=0), epoch_length=4, batches_in_epoch=4, categories_json="{}", options_json="{}"
        )
        yield pb.StreamResponse(header=header)
        context.abort(self.code, self.details)


@contextlib.contextmanager
def scripted_server(service: ScriptedService) -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.unary_stream_rpc_method_handler(
        service.stream, request_deserializer=pb.StreamRequest.FromString, response_serializer=pb.StreamResponse.SerializeToString
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, {"StreamBatches": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0).wait()


def iterate_bounded(remote: RemoteLoader, timeout: float = 30.0) -> BaseException | None:
    """Iterate ``remote`` in a thread; the exception it ended with. Fails the test if the
    iteration is still running after ``timeout`` seconds (a loader that never gives up)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            list(remote)
            outcome.append(None)
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        remote.close()
        pytest.fail(f"RemoteLoader still retrying after {timeout} s")
    return outcome[0]


def test_a_stream_failing_after_its_header_gives_up() -> None:
    """The header is no progress: a stream that fails right after it every time (an image
    over the decoder's limit, say) is retried max_retries times, then raised."""
    service = ScriptedService(grpc.StatusCode.UNAVAILABLE, "server: shutting down; retry")
    with scripted_server(service) as address:
        remote = RemoteLoader(address, "synth", max_retries=3, backoff=(0.01, 0.02), connect_timeout=5)
        error = iterate_bounded(remote)
    assert isinstance(error, RemoteLoaderError) and error.code == grpc.StatusCode.UNAVAILABLE
    assert "gave up after 4" in str(error) and "shutting down" in str(error)
    assert service.attempts == 4


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    ],
)
def test_permanent_errors_fail_at_once_with_the_servers_message(code: grpc.StatusCode) -> None:
    service = ScriptedService(code, "dataset 'synth': instances.json: field 'annotations': annotation file unavailable")
    with scripted_server(service) as address:
        remote = RemoteLoader(address, "synth", max_retries=8, backoff=(0.5, 1.0), connect_timeout=5)
        error = iterate_bounded(remote, timeout=20)
    assert isinstance(error, RemoteLoaderError) and error.code == code
    assert "field 'annotations'" in str(error)
    assert service.attempts == 1


def test_which_failures_are_transient() -> None:
    assert is_transient(grpc.StatusCode.UNAVAILABLE, "Socket closed")
    assert is_transient(grpc.StatusCode.RESOURCE_EXHAUSTED, "max_streams: this server already runs its limit")
    assert not is_transient(grpc.StatusCode.RESOURCE_EXHAUSTED, "max_stream_bytes: this request needs about 12 GiB")
    assert not is_transient(grpc.StatusCode.RESOURCE_EXHAUSTED, "max_message_bytes: a batch encoded to ...")
    assert is_transient(grpc.StatusCode.INTERNAL, "Received RST_STREAM with error code 2")
    assert not is_transient(grpc.StatusCode.INTERNAL, "server: internal error (id 1a2b3c4d; the server log has the details)")
    assert not is_transient(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
