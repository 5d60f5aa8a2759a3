//! The AugServe gRPC service.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use augserve_core::pipeline::{
    finish_batch, prepare_images_with, worker_pool, BatchOrder, PerImageWork, PreparedBatch,
};
use augserve_core::sampler::batches;
use augserve_core::{
    BatchOps, CpuBatchOps, Dataset, DatasetFormat, DecodeLimits, Destination, Pipeline, ShardSpec,
};
use augserve_cuda::{open_backend, DeviceRequest, CPU_JPEG_DECODER};
use augserve_proto::convert::{spec_from_proto, tail_from_proto};
use augserve_proto::v1;
use augserve_proto::v1::aug_serve_server::AugServe;
use rayon::ThreadPool;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::config::{LimitsConfig, ServerConfig};
use crate::memory::{
    default_batch_memory_bytes, BatchMemory, InFlight, InFlightToken, Reservation,
};
use crate::shm::ShmRegistry;
use crate::stream_producer::{
    batch_to_proto_recycled, release_freed_memory, BatchSender, Outgoing, StreamCounts,
    StreamProducer,
};
use crate::telemetry::Telemetry;
use crate::ServerError;

struct State {
    datasets: BTreeMap<String, Arc<Dataset>>,
    ops: Arc<dyn BatchOps>,
    gpu_unavailable: Option<String>,
    pool: Arc<ThreadPool>,
    limits: LimitsConfig,
    streams: Arc<Semaphore>,
    memory: Arc<BatchMemory>,
    shutting_down: Arc<AtomicBool>,
    telemetry: Arc<Telemetry>,
    shm: ShmRegistry,
    /// Who decodes JPEGs ("libjpeg-turbo", "nvjpeg-hardware", "nvjpeg-cuda") and why not the
    /// GPU's hardware engine, for GetServerInfo.
    jpeg_decoder: (String, String),
}

/// The service; cheap to clone (shared state).
#[derive(Clone)]
pub struct AugServeService {
    state: Arc<State>,
}

impl AugServeService {
    /// Opens every configured dataset and picks the batch-ops device.
    pub fn new(cfg: &ServerConfig, shutting_down: Arc<AtomicBool>) -> Result<Self, ServerError> {
        let device = match cfg.device.as_str() {
            "auto" => DeviceRequest::Auto,
            "cpu" => DeviceRequest::Cpu,
            "gpu" => DeviceRequest::Gpu,
            other => {
                return Err(ServerError::Config(format!(
                    "device: expected auto, cpu or gpu, got '{other}'"
                )))
            }
        };
        let split = augserve_cuda::jpeg::route::DecodeSplit::from_settings(
            cfg.gpu_decode,
            cfg.gpu_decode_share,
        )
        .map_err(|e| ServerError::Config(format!("gpu_decode_share: {e}")))?;
        let decode_asked = split.is_some();
        let backend = open_backend(device, cfg.cuda_device, CpuBatchOps::default(), split)
            .map_err(|e| ServerError::Config(format!("device = gpu, but {e}")))?;
        let (ops, mut gpu_unavailable) = (backend.ops, backend.gpu_unavailable);
        let mut jpeg_decoder = backend.jpeg_decoder;
        if device == DeviceRequest::Cpu {
            let why = "device = cpu in the configuration".to_string();
            if decode_asked {
                jpeg_decoder.1 = why.clone();
            }
            gpu_unavailable = Some(why);
        }
        let mut service = Self::with_batch_ops(cfg, shutting_down, ops, gpu_unavailable)?;
        if let Some(state) = Arc::get_mut(&mut service.state) {
            state.jpeg_decoder = jpeg_decoder;
        }
        Ok(service)
    }

    /// The service with a given batch-ops backend (`gpu_unavailable`: why it is not a GPU,
    /// if it is not). For embedding and for tests of backends that are not the built-in ones.
    pub fn with_batch_ops(
        cfg: &ServerConfig,
        shutting_down: Arc<AtomicBool>,
        ops: Arc<dyn BatchOps>,
        gpu_unavailable: Option<String>,
    ) -> Result<Self, ServerError> {
        let mut datasets = BTreeMap::new();
        for d in &cfg.datasets {
            let format = match d.format {
                Some(f) => f,
                None => DatasetFormat::detect(&d.path)?,
            };
            let ds = Dataset::open(&d.path, format, cfg.limits.max_file_bytes)?;
            tracing::info!(name = %d.name, samples = ds.len(), format = format.name(), "dataset ready");
            datasets.insert(d.name.clone(), Arc::new(ds));
        }
        tracing::info!(device = %ops.device(), "batch ops");
        let memory_bytes = match cfg.limits.max_batch_memory_bytes {
            0 => default_batch_memory_bytes(),
            n => n,
        };
        tracing::info!(max_batch_memory_bytes = memory_bytes, "batch memory budget");
        let idle_ops = ops.clone();
        // The last stream ended: pooled buffers go back to the OS.
        let memory = BatchMemory::new(memory_bytes, move || {
            idle_ops.release_idle_memory();
            augserve_core::buffers::release_read_buffers();
            release_freed_memory();
        });
        Ok(AugServeService {
            state: Arc::new(State {
                datasets,
                ops,
                gpu_unavailable,
                pool: worker_pool(cfg.threads)?,
                limits: cfg.limits,
                streams: Arc::new(Semaphore::new(cfg.limits.max_concurrent_streams as usize)),
                memory,
                shutting_down,
                telemetry: Arc::new(Telemetry::default()),
                shm: ShmRegistry::new(Some(cfg.shm_dir.clone())),
                jpeg_decoder: (CPU_JPEG_DECODER.into(), String::new()),
            }),
        })
    }

    /// The server-wide telemetry (for the metrics ticker).
    pub fn telemetry(&self) -> Arc<Telemetry> {
        self.state.telemetry.clone()
    }

    /// The server-wide batch memory budget, in bytes (max_batch_memory_bytes, resolved).
    pub fn batch_memory_budget(&self) -> u64 {
        self.state.memory.total_bytes()
    }

    /// The batch-ops backend (for the metrics ticker's device memory gauge).
    pub fn batch_ops(&self) -> Arc<dyn BatchOps> {
        self.state.ops.clone()
    }

    /// Shared-memory rings alive now (one per SHM stream).
    pub fn live_shm_rings(&self) -> usize {
        self.state.shm.live()
    }

    fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_pixels: self.state.limits.max_pixels,
            max_file_bytes: self.state.limits.max_file_bytes,
        }
    }

    fn check_batch(
        &self,
        spec: &augserve_core::PipelineSpec,
        batch_size: u32,
    ) -> Result<(), ServerError> {
        let l = &self.state.limits;
        if batch_size == 0 || batch_size > l.max_batch_size {
            return Err(ServerError::InvalidArgument {
                field: "batch_size",
                message: format!("must be in 1..={}, got {batch_size}", l.max_batch_size),
            });
        }
        let bytes = spec.output_image_bytes() as u64 * u64::from(batch_size);
        if bytes > l.max_batch_bytes {
            return Err(ServerError::ResourceExhausted(format!(
                "a batch of {batch_size} x {}x{} {} is {bytes} bytes, over max_batch_bytes {}",
                spec.size.width,
                spec.size.height,
                spec.output.dtype.name(),
                l.max_batch_bytes
            )));
        }
        Ok(())
    }
}

/// What a valid StreamBatches request asks for.
struct StreamPlan {
    wanted: v1::Transport,
    pipeline: Pipeline,
    prefetch: u32,
    /// Batches made at once.
    in_flight: u32,
    slots: u32,
    slot_bytes: usize,
    order: BatchOrder,
}

impl AugServeService {
    /// Checks a StreamBatches request, field by field, and says what the stream will do.
    fn plan_stream(&self, r: &v1::StreamBatchesRequest) -> Result<StreamPlan, ServerError> {
        let st = &self.state;
        let wanted =
            v1::Transport::try_from(r.transport).map_err(|_| ServerError::InvalidArgument {
                field: "transport",
                message: format!("unknown value {}", r.transport),
            })?;
        let ds = st
            .datasets
            .get(&r.dataset)
            .cloned()
            .ok_or_else(|| ServerError::UnknownDataset(r.dataset.clone()))?;
        let spec = spec_from_proto(r.spec.as_ref())?;
        self.check_batch(&spec, r.batch_size)?;
        let prefetch = if r.prefetch == 0 { 2 } else { r.prefetch };
        if prefetch > st.limits.max_prefetch {
            return Err(ServerError::InvalidArgument {
                field: "prefetch",
                message: format!("must be <= {}", st.limits.max_prefetch),
            });
        }
        let shard = ShardSpec {
            seed: r.seed,
            shuffle: !r.no_shuffle,
            rank: r.rank,
            world_size: r.world_size.max(1),
            tail: tail_from_proto(r.tail)?,
        };
        shard.validate()?;
        // A slot for each queued batch, each batch being made, and the one the client reads.
        let made_at_once = u32::try_from(st.ops.batches_in_flight().max(1)).unwrap_or(1);
        let max_slots = st.limits.max_prefetch + 1 + made_at_once;
        let slots = if r.slots == 0 {
            prefetch + 1 + made_at_once
        } else {
            r.slots
        };
        if slots > max_slots {
            return Err(ServerError::InvalidArgument {
                field: "slots",
                message: format!(
                    "must be <= {max_slots} (max_prefetch + 1 + the {made_at_once} batches the \
                     backend makes at once)"
                ),
            });
        }
        // Fewer slots than that, fewer batches made at once: a batch being made must never
        // hold the slot an earlier one waits for.
        let in_flight = made_at_once.min(slots.saturating_sub(prefetch + 1)).max(1);
        let slot_bytes = spec.output_image_bytes() * r.batch_size as usize;
        let pipeline = Pipeline::with_pool(ds, spec, self.decode_limits(), st.pool.clone())?
            .with_batch_ops(st.ops.clone());
        let order = Self::batch_order(r, shard, pipeline.dataset().len())?;
        Ok(StreamPlan {
            wanted,
            pipeline,
            prefetch,
            in_flight,
            slots,
            slot_bytes,
            order,
        })
    }

    /// The batches a request asks for: its epochs, its resume point, its share of a rank's
    /// batches (DataLoader workers).
    fn batch_order(
        r: &v1::StreamBatchesRequest,
        shard: ShardSpec,
        len: usize,
    ) -> Result<BatchOrder, ServerError> {
        let batch_stride = r.batch_stride.max(1) as usize;
        if r.batch_offset as usize >= batch_stride {
            return Err(ServerError::InvalidArgument {
                field: "batch_offset",
                message: format!(
                    "must be < batch_stride ({batch_stride}), got {}",
                    r.batch_offset
                ),
            });
        }
        // A start_batch past the end of its epoch would silently stream the next epoch.
        let start_ids = shard.ids_from(len, r.start_epoch, r.start_position)?;
        let epoch_batches = batches(&start_ids, r.batch_size as usize, r.drop_last).len();
        if r.start_batch as usize > epoch_batches {
            return Err(ServerError::InvalidArgument {
                field: "start_batch",
                message: format!(
                    "{} is past the end of epoch {}: this shard has {epoch_batches} batches",
                    r.start_batch, r.start_epoch
                ),
            });
        }
        let end_epoch = match r.epochs {
            0 => u64::MAX,
            n => r.start_epoch.saturating_add(n),
        };
        let mut order = BatchOrder::new(
            shard,
            r.batch_size as usize,
            r.drop_last,
            r.start_epoch..end_epoch,
        );
        (order.start_position, order.start_batch) = (r.start_position, r.start_batch as usize);
        (order.batch_stride, order.batch_offset) = (batch_stride, r.batch_offset as usize);
        Ok(order)
    }
}

/// How long a new stream waits for a free slot before RESOURCE_EXHAUSTED.
const STREAM_ADMISSION_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// A stream's batches, holding its concurrent-stream permit and its share of the batch memory
/// budget: when the client leaves, tonic drops this and the slot is free at once, while the
/// producer thread finishes the batch in hand and exits on its next send.
pub struct BatchStream {
    batches: ReceiverStream<Outgoing>,
    /// The token of the batch tonic took last. Tonic asks for the next message only once
    /// hyper has room in h2's send buffer, i.e. when that batch is nearly sent: then it goes.
    sending: Option<InFlightToken>,
    _reservation: Arc<Reservation>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl tokio_stream::Stream for BatchStream {
    type Item = Result<v1::Batch, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.sending = None;
        match std::pin::Pin::new(&mut self.batches).poll_next(cx) {
            std::task::Poll::Ready(Some((msg, token))) => {
                self.sending = token;
                std::task::Poll::Ready(Some(msg))
            }
            std::task::Poll::Ready(None) => std::task::Poll::Ready(None),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

#[tonic::async_trait]
impl AugServe for AugServeService {
    type StreamBatchesStream = BatchStream;

    async fn stream_batches(
        &self,
        request: Request<v1::StreamBatchesRequest>,
    ) -> Result<Response<BatchStream>, Status> {
        // Same host: the Unix socket, or TCP from a loopback address.
        let local = request
            .extensions()
            .get::<tonic::transport::server::UdsConnectInfo>()
            .is_some()
            || request.remote_addr().is_some_and(|a| a.ip().is_loopback());
        let r = request.into_inner();
        let plan = self.plan_stream(&r)?;
        let st = &self.state;
        // A short wait for a slot: a client that cancels and at once reopens races the release
        // of its old stream's slot (hyper drops the old stream on its own task).
        let permit =
            tokio::time::timeout(STREAM_ADMISSION_WAIT, st.streams.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok)
                .ok_or_else(|| {
                    ServerError::ResourceExhausted(format!(
                        "{} concurrent streams already (max_concurrent_streams)",
                        st.limits.max_concurrent_streams
                    ))
                })?;
        let ops = plan.pipeline.batch_ops();
        let (transport, fallback_reason) = crate::transport::choose(
            plan.wanted,
            local,
            plan.slots,
            plan.prefetch + plan.in_flight,
            plan.slot_bytes,
            ops.as_ref(),
            &st.shm,
        );
        if !fallback_reason.is_empty() {
            tracing::info!(asked = plan.wanted.as_str_name(), chosen = transport.kind().as_str_name(), reason = %fallback_reason, "transport fallback");
        }
        // The stream's worst case, reserved from the server-wide budget before any work.
        let need = transport.reserved_bytes(plan.prefetch, plan.in_flight, plan.slot_bytes);
        let reservation = Arc::new(
            st.memory
                .reserve(need, STREAM_ADMISSION_WAIT, "this stream")
                .await?,
        );
        let transport_info = Some(transport.info(fallback_reason));
        let (tx, rx) = mpsc::channel::<Outgoing>(plan.prefetch as usize);
        let o = &plan.order;
        tracing::info!(dataset = %r.dataset, batch_size = r.batch_size, rank = o.shard.rank, world_size = o.shard.world_size, start_epoch = r.start_epoch, start_position = o.start_position, start_batch = o.start_batch, batch_stride = o.batch_stride, batch_offset = o.batch_offset, epochs = r.epochs, seed = o.shard.seed, "stream start");
        let producer = StreamProducer {
            sender: BatchSender {
                num_classes: plan.pipeline.spec().mix.num_classes,
                ops,
                transport,
                transport_info,
                in_flight: InFlight::new((plan.prefetch + plan.in_flight) as usize),
                tx,
                stop: st.shutting_down.clone(),
                telemetry: st.telemetry.clone(),
                dataset_name: r.dataset.clone(),
                counts: StreamCounts::default(),
                _reservation: reservation.clone(),
            },
            pipeline: plan.pipeline,
            order: plan.order,
            in_flight: plan.in_flight as usize,
        };
        producer.spawn()?;
        Ok(Response::new(BatchStream {
            batches: ReceiverStream::new(rx),
            sending: None,
            _reservation: reservation,
            _permit: permit,
        }))
    }

    async fn augment_images(
        &self,
        request: Request<v1::AugmentImagesRequest>,
    ) -> Result<Response<v1::Batch>, Status> {
        let r = request.into_inner();
        let st = self.state.clone();
        let spec = spec_from_proto(r.spec.as_ref()).map_err(ServerError::from)?;
        if r.images.len() > st.limits.max_images_per_request as usize {
            return Err(ServerError::ResourceExhausted(format!(
                "{} images, over max_images_per_request {}",
                r.images.len(),
                st.limits.max_images_per_request
            ))
            .into());
        }
        if !r.labels.is_empty() && r.labels.len() != r.images.len() {
            return Err(ServerError::InvalidArgument {
                field: "labels",
                message: format!("{} labels for {} images", r.labels.len(), r.images.len()),
            }
            .into());
        }
        self.check_batch(&spec, (r.images.len() as u32).max(1))?;
        let num_classes = spec.mix.num_classes;
        if let Some(l) = r
            .labels
            .iter()
            .find(|&&l| num_classes > 0 && l >= i64::from(num_classes))
        {
            return Err(ServerError::InvalidArgument {
                field: "spec.mix.num_classes",
                message: format!(
                    "is {num_classes}, but a label is {l}: soft targets need a column for every label"
                ),
            }
            .into());
        }
        let limits = self.decode_limits();
        // The batch and the copy tonic encodes it into.
        let need = 2 * spec.output_image_bytes() as u64 * r.images.len() as u64;
        let reservation = st
            .memory
            .reserve(need, STREAM_ADMISSION_WAIT, "this request")
            .await?;
        let batch = tokio::task::spawn_blocking(move || -> Result<v1::Batch, ServerError> {
            let _reservation = reservation;
            let started = Instant::now();
            let ids: Vec<u64> = (0..r.images.len() as u64).collect();
            // The CPU batch ops resize per image; a device decoder is not used for requests.
            let work = PerImageWork {
                decoder: None,
                resize: st.ops.per_image_resize(),
                weights: st.ops.per_image_weights(),
            };
            let source = |id: u64| {
                let i = id as usize;
                (
                    format!("request[{i}]"),
                    r.labels.get(i).copied().unwrap_or(-1),
                    Ok(r.images[i].to_vec()),
                )
            };
            let (prepared, timings) = prepare_images_with(
                &spec, &limits, &st.pool, r.seed, r.epoch, &ids, source, work,
            );
            let mut p = PreparedBatch::collect(&spec, prepared, timings, started)?;
            p.epoch = r.epoch;
            p.seed = r.seed;
            let b = finish_batch(&spec, st.ops.as_ref(), &st.pool, p, Destination::Owned)?;
            st.telemetry.record_batch("request", &b);
            Ok(batch_to_proto_recycled(b, num_classes, &st.ops, None))
        })
        .await
        .map_err(|e| Status::internal(format!("worker failed: {e}")))??;
        Ok(Response::new(batch))
    }

    async fn list_datasets(
        &self,
        _: Request<v1::ListDatasetsRequest>,
    ) -> Result<Response<v1::ListDatasetsResponse>, Status> {
        let datasets = self
            .state
            .datasets
            .iter()
            .map(|(name, d)| v1::DatasetInfo {
                name: name.clone(),
                format: d.format().name().into(),
                samples: d.len() as u64,
                num_classes: d.num_classes() as u32,
                classes: d.classes().to_vec(),
            })
            .collect();
        Ok(Response::new(v1::ListDatasetsResponse { datasets }))
    }

    async fn get_server_info(
        &self,
        _: Request<v1::GetServerInfoRequest>,
    ) -> Result<Response<v1::ServerInfo>, Status> {
        let st = &self.state;
        let l = &st.limits;
        let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Ok(Response::new(v1::ServerInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            batch_device: st.ops.device(),
            kernels_compiled: st.gpu_unavailable.is_none(),
            gpu_unavailable_reason: st.gpu_unavailable.clone().unwrap_or_default(),
            worker_threads: st.pool.current_num_threads() as u32,
            limits: Some(v1::Limits {
                max_request_bytes: l.max_request_bytes,
                max_batch_bytes: l.max_batch_bytes,
                max_pixels: l.max_pixels,
                max_file_bytes: l.max_file_bytes,
                max_concurrent_streams: l.max_concurrent_streams,
                max_batch_size: l.max_batch_size,
                max_prefetch: l.max_prefetch,
                max_images_per_request: l.max_images_per_request,
                max_batch_memory_bytes: st.memory.total_bytes(),
            }),
            dtypes: strs(&["uint8", "float16", "float32"]),
            layouts: strs(&["NCHW", "NHWC"]),
            crop_modes: strs(&["random_resized", "center", "resize"]),
            mix_modes: strs(&["batch", "pair", "elem"]),
            transports: std::iter::once("inline")
                .chain(st.shm.unavailable().is_none().then_some("shm"))
                .chain(st.gpu_unavailable.is_none().then_some("cuda_ipc"))
                .map(String::from)
                .collect(),
            jpeg_decoder: st.jpeg_decoder.0.clone(),
            jpeg_decoder_note: st.jpeg_decoder.1.clone(),
        }))
    }

    async fn release_slots(
        &self,
        request: Request<v1::ReleaseSlotsRequest>,
    ) -> Result<Response<v1::ReleaseSlotsResponse>, Status> {
        let r = request.into_inner();
        let ring = self.state.shm.get(&r.stream_id).ok_or_else(|| {
            Status::not_found("no live SHM or CUDA IPC stream with that stream_id (it ended)")
        })?;
        let mut released = 0;
        let mut bad = Vec::new();
        for s in &r.slots {
            if ring.release(s.slot, s.generation) {
                released += 1;
            } else {
                bad.push(format!("{}@{}", s.slot, s.generation));
            }
        }
        if !bad.is_empty() {
            return Err(ServerError::InvalidArgument {
                field: "slots",
                message: format!(
                    "not out with these generations (already released or never sent): {}",
                    bad.join(", ")
                ),
            }
            .into());
        }
        Ok(Response::new(v1::ReleaseSlotsResponse { released }))
    }
}
