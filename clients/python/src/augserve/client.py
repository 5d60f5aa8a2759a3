"""The augserve client: connect, stream batches, augment images, list datasets."""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import grpc

from augserve import _lifetime, errors
from augserve.batch import Batch
from augserve.spec import TAILS, PipelineSpec, enum_value
from augserve.transport import TRANSPORT_NAMES, TRANSPORTS, CudaIpcRing, ShmRing
from augserve.v1 import augserve_pb2 as pb

log = logging.getLogger("augserve")

_SERVICE = "/augserve.v1.AugServe/"
# Lost connections are resumed; anything else is the server's verdict and is raised.
_RESUMABLE = {grpc.StatusCode.UNAVAILABLE}


# The process that made this module's first channel. A process that finds another pid here was
# forked from it: gRPC is not fork-safe, and a channel made in such a child can hang
# (`forked_after_grpc`).
_channel_pid: int | None = None


def forked_after_grpc() -> bool:
    """Whether this process was forked from one that had made augserve channels (the case in
    which gRPC's Python library may hang: use spawn or forkserver workers instead)."""
    return _channel_pid is not None and _channel_pid != os.getpid()


def _target(address: str) -> str:
    """A grpcio target for `host:port`, `http://host:port` or `unix:///path/to.sock`."""
    for scheme in ("http://", "grpc://"):
        if address.startswith(scheme):
            return address[len(scheme) :]
    return address


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    format: str
    samples: int
    num_classes: int
    classes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ServerInfo:
    version: str
    batch_device: str
    kernels_compiled: bool
    gpu_unavailable_reason: str
    worker_threads: int
    limits: dict[str, int]
    dtypes: list[str]
    layouts: list[str]
    crop_modes: list[str]
    mix_modes: list[str]
    transports: list[str] = field(default_factory=list)
    # "nvjpeg-hardware", "nvjpeg-cuda" or "libjpeg-turbo" (CPU only), and why not the hardware engine.
    jpeg_decoder: str = ""
    jpeg_decoder_note: str = ""


class Client:
    """A connection to an augserve server.

    >>> client = augserve.Client("unix:///run/augserve.sock")   # or "host:50051"
    >>> for batch in client.stream("imagenet", batch_size=256, epochs=1):
    ...     images, targets = batch.to_torch("cuda")

    `token` is sent as a bearer token on every call; `root_certificates` (PEM bytes) switches
    to TLS. `load_balancing="round_robin"` with a `dns:///name:port` address spreads streams
    over all the servers the name resolves to. Messages of any size are accepted (a float32 batch of 256 images is 154 MB).
    """

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        root_certificates: bytes | None = None,
        timeout: float | None = 30.0,
        load_balancing: str | None = None,
        options: Sequence[tuple[str, object]] = (),
    ):
        self.address = address
        self.timeout = timeout
        opts = [
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", -1),
            *options,
        ]
        if load_balancing:
            # "round_robin" spreads calls over every address a "dns:///" target resolves to
            # (a headless Service's pods): how trainers share a pool of servers.
            opts.append(("grpc.lb_policy_name", load_balancing))
        global _channel_pid
        if _channel_pid is None:
            _channel_pid = os.getpid()
        target = _target(address)
        if target.startswith("unix:"):
            # grpcio's default :authority for a socket is its %-encoded path. augserve accepts it
            # (vendor/README.md), but servers before that reset such streams and proxies may
            # too; "localhost" is what grpc-go sends.
            opts.insert(0, ("grpc.default_authority", "localhost"))
        if root_certificates is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(target, creds, options=opts)
        else:
            self._channel = grpc.insecure_channel(target, options=opts)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._stream_batches = self._channel.unary_stream(
            _SERVICE + "StreamBatches",
            request_serializer=pb.StreamBatchesRequest.SerializeToString,
            response_deserializer=Batch.from_bytes,
        )
        self._augment_images = self._channel.unary_unary(
            _SERVICE + "AugmentImages",
            request_serializer=pb.AugmentImagesRequest.SerializeToString,
            response_deserializer=Batch.from_bytes,
        )
        self._list_datasets = self._channel.unary_unary(
            _SERVICE + "ListDatasets",
            request_serializer=pb.ListDatasetsRequest.SerializeToString,
            response_deserializer=pb.ListDatasetsResponse.FromString,
        )
        self._release_slots = self._channel.unary_unary(
            _SERVICE + "ReleaseSlots",
            request_serializer=pb.ReleaseSlotsRequest.SerializeToString,
            response_deserializer=pb.ReleaseSlotsResponse.FromString,
        )
        self._server_info = self._channel.unary_unary(
            _SERVICE + "GetServerInfo",
            request_serializer=pb.GetServerInfoRequest.SerializeToString,
            response_deserializer=pb.ServerInfo.FromString,
        )
        self._closed = False
        _lifetime.track(_lifetime.CLIENT, self)

    def close(self) -> None:
        """Closes the channel (and so every call on it); closing again does nothing."""
        if not self._closed:
            self._closed = True
            self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _unary(self, method, request):
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from None

    def datasets(self) -> list[DatasetInfo]:
        """The datasets the server serves."""
        r = self._unary(self._list_datasets, pb.ListDatasetsRequest())
        return [
            DatasetInfo(d.name, d.format, d.samples, d.num_classes, list(d.classes))
            for d in r.datasets
        ]

    def info(self) -> ServerInfo:
        """Version, batch device, limits and supported options."""
        r = self._unary(self._server_info, pb.GetServerInfoRequest())
        return ServerInfo(
            version=r.version,
            batch_device=r.batch_device,
            kernels_compiled=r.kernels_compiled,
            gpu_unavailable_reason=r.gpu_unavailable_reason,
            worker_threads=r.worker_threads,
            limits={f.name: v for f, v in r.limits.ListFields()},
            dtypes=list(r.dtypes),
            layouts=list(r.layouts),
            crop_modes=list(r.crop_modes),
            mix_modes=list(r.mix_modes),
            transports=list(r.transports),
            jpeg_decoder=r.jpeg_decoder,
            jpeg_decoder_note=r.jpeg_decoder_note,
        )

    def wait_ready(self, timeout: float = 10.0) -> ServerInfo:
        """Waits until the server answers (for scripts that start one), then returns its info."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.info()
            except errors.UnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def augment(
        self,
        images: Sequence[bytes],
        spec: PipelineSpec | None = None,
        *,
        labels: Sequence[int] | None = None,
        seed: int = 0,
        epoch: int = 0,
    ) -> Batch:
        """Augments encoded JPEGs (PNGs, WebPs) into one batch (stateless). Bad images become `batch.errors`
        (or raise FailedPreconditionError with on_error="fail")."""
        req = pb.AugmentImagesRequest(
            images=list(images),
            labels=list(labels or []),
            spec=(spec or PipelineSpec()).to_proto(),
            seed=seed,
            epoch=epoch,
        )
        return self._unary(self._augment_images, req)

    def stream(
        self,
        dataset: str,
        spec: PipelineSpec | None = None,
        batch_size: int = 256,
        seed: int = 0,
        epochs: int = 1,
        *,
        start_epoch: int = 0,
        start_batch: int = 0,
        start_position: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        drop_last: bool = False,
        tail: str = "pad",
        prefetch: int = 2,
        resume: bool = True,
        max_retries: int = 8,
        transport: str = "inline",
        slots: int = 0,
        auto_release: bool = True,
        batch_stride: int = 1,
        batch_offset: int = 0,
    ) -> BatchStream:
        """Streams `epochs` epochs (0 = until closed) of a dataset the server serves.

        The same arguments give byte-identical batches. Each rank of `world_size` readers gets
        its own shard. `prefetch` is how many batches the server prepares ahead. When the
        connection drops, the stream reconnects and resumes after the last batch received
        (`resume`, up to `max_retries` tries with backoff); server errors raise at once.

        `transport="shm"` (same host: the Unix socket, or loopback TCP) delivers each batch
        through a shared-memory ring of `slots` slots (0 = prefetch + 1 + the batches the
        server makes at once): `batch.images` is then a read-only view of the slot, valid until `batch.release()`, which `auto_release` does
        when the next batch is asked for. `"cuda_ipc"` asks for device memory (falls back to
        shm, then inline). `stream.transport` and `stream.fallback_reason` say what the server
        chose.

        Elastic resume: `start_position` is how many samples of `start_epoch` the whole job has
        consumed (all ranks together; k batches per rank make k * batch_size * world_size). The
        rest of that epoch is sharded among this call's `world_size`, which may differ from the
        one that consumed them. `batch_stride` / `batch_offset` take every `batch_stride`-th
        batch of the rank's epoch, from `batch_offset` (DataLoader workers).
        """
        req = pb.StreamBatchesRequest(
            dataset=dataset,
            spec=(spec or PipelineSpec()).to_proto(),
            batch_size=batch_size,
            seed=seed,
            start_epoch=start_epoch,
            epochs=epochs,
            rank=rank,
            world_size=world_size,
            no_shuffle=not shuffle,
            drop_last=drop_last,
            tail=enum_value(TAILS, tail, "tail"),
            prefetch=prefetch,
            start_batch=start_batch,
            start_position=start_position,
            batch_stride=batch_stride,
            batch_offset=batch_offset,
            transport=enum_value(TRANSPORTS, transport, "transport"),
            slots=slots,
        )
        return BatchStream(self, req, max_retries if resume else 0, auto_release)


class BatchStream(Iterator[Batch]):
    """An iterator over a StreamBatches call that resumes after lost connections.

    `last` is (epoch, index) of the last batch received; `reconnects` counts resumptions.
    Close it (or leave a `with` block) to cancel the call on the server.
    """

    def __init__(self, client: Client, request: pb.StreamBatchesRequest, max_retries: int, auto_release: bool = True):
        self._client = client
        self._auto_release = auto_release
        self._ring: ShmRing | CudaIpcRing | None = None
        self._held: Batch | None = None
        self.transport: str | None = None
        self.fallback_reason = ""
        self._request = request
        self._max_retries = max_retries
        self._call = None
        self._closed = False
        self.last: tuple[int, int] | None = None
        self.reconnects = 0
        _lifetime.track(_lifetime.STREAM, self)

    def _resume_request(self) -> pb.StreamBatchesRequest:
        req = pb.StreamBatchesRequest()
        req.CopyFrom(self._request)
        if self.last is not None:
            epoch, index = self.last
            req.start_epoch = epoch
            req.start_batch = index + 1
            if epoch != self._request.start_epoch:
                req.start_position = 0  # a position belongs to the first epoch only
            if self._request.epochs:
                req.epochs = self._request.start_epoch + self._request.epochs - epoch
        return req

    def _release(self, stream_id: str, slot: pb.SlotRef) -> None:
        try:
            self._client._release_slots(
                pb.ReleaseSlotsRequest(stream_id=stream_id, slots=[slot]),
                timeout=self._client.timeout,
                metadata=self._client._metadata,
            )
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:  # NOT_FOUND: the stream ended, ring gone
                raise errors.from_rpc_error(e) from None

    def _adopt(self, batch: Batch) -> Batch:
        """Maps the stream's ring (first batch) and points `batch.images` at its slot."""
        if batch.transport is not None:
            t = batch.transport
            self.transport = TRANSPORT_NAMES.get(t.transport, "inline")
            self.fallback_reason = t.fallback_reason
            if t.fallback_reason:
                log.info("augserve transport: %s (%s)", self.transport, t.fallback_reason)
            if t.transport == pb.TRANSPORT_SHM:
                self._ring = ShmRing(t)
            elif t.transport == pb.TRANSPORT_CUDA_IPC:
                self._ring = CudaIpcRing(t)
            else:
                self._ring = None
        if batch.slot is not None:
            if self._ring is None:
                raise errors.AugServeError("a batch in a shared-memory slot, but no ring was announced")
            batch.images = self._ring.view(batch.slot, batch.images)
            batch._release = functools.partial(self._release, self._ring.stream_id, batch.slot)
            if self._auto_release:
                self._held = batch
        return batch

    def __next__(self) -> Batch:
        if self._held is not None:
            held, self._held = self._held, None
            held.release()
        retries = 0
        while True:
            if self._closed:
                raise StopIteration
            if self._call is None:
                self._call = self._client._stream_batches(
                    self._resume_request(), metadata=self._client._metadata
                )
            try:
                batch = next(self._call)
            except StopIteration:
                self._closed = True
                raise
            except grpc.RpcError as e:
                self._call = None
                if self._closed:
                    raise StopIteration from None
                if e.code() in _RESUMABLE and retries < self._max_retries:
                    delay = min(0.1 * 2**retries, 5.0)
                    retries += 1
                    log.warning(
                        "augserve stream lost (%s); resuming after batch %s in %.1f s (try %d of %d)",
                        e.details(), self.last, delay, retries, self._max_retries,
                    )
                    time.sleep(delay)
                    continue
                raise errors.from_rpc_error(e) from None
            if retries:
                self.reconnects += 1
            self.last = (batch.epoch, batch.index)
            return self._adopt(batch)

    def close(self) -> None:
        """Cancels the call; the server stops preparing batches for it."""
        self._closed = True
        if self._call is not None:
            self._call.cancel()

    def __enter__(self) -> BatchStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
