from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CropMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CROP_MODE_UNSPECIFIED: _ClassVar[CropMode]
    CROP_MODE_RANDOM_RESIZED: _ClassVar[CropMode]
    CROP_MODE_CENTER: _ClassVar[CropMode]
    CROP_MODE_RESIZE: _ClassVar[CropMode]

class MixMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MIX_MODE_UNSPECIFIED: _ClassVar[MixMode]
    MIX_MODE_BATCH: _ClassVar[MixMode]
    MIX_MODE_PAIR: _ClassVar[MixMode]
    MIX_MODE_ELEM: _ClassVar[MixMode]

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_UINT8: _ClassVar[DType]
    DTYPE_FLOAT16: _ClassVar[DType]
    DTYPE_FLOAT32: _ClassVar[DType]

class Layout(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LAYOUT_UNSPECIFIED: _ClassVar[Layout]
    LAYOUT_NCHW: _ClassVar[Layout]
    LAYOUT_NHWC: _ClassVar[Layout]

class Device(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_UNSPECIFIED: _ClassVar[Device]
    DEVICE_AUTO: _ClassVar[Device]
    DEVICE_CPU: _ClassVar[Device]
    DEVICE_GPU: _ClassVar[Device]

class ErrorPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_POLICY_UNSPECIFIED: _ClassVar[ErrorPolicy]
    ERROR_POLICY_SKIP: _ClassVar[ErrorPolicy]
    ERROR_POLICY_FAIL: _ClassVar[ErrorPolicy]

class DamagedPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DAMAGED_POLICY_UNSPECIFIED: _ClassVar[DamagedPolicy]
    DAMAGED_POLICY_REJECT: _ClassVar[DamagedPolicy]
    DAMAGED_POLICY_ACCEPT: _ClassVar[DamagedPolicy]

class Transport(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSPORT_INLINE: _ClassVar[Transport]
    TRANSPORT_SHM: _ClassVar[Transport]
    TRANSPORT_CUDA_IPC: _ClassVar[Transport]

class Tail(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TAIL_UNSPECIFIED: _ClassVar[Tail]
    TAIL_PAD: _ClassVar[Tail]
    TAIL_DROP: _ClassVar[Tail]
    TAIL_UNEVEN: _ClassVar[Tail]
CROP_MODE_UNSPECIFIED: CropMode
CROP_MODE_RANDOM_RESIZED: CropMode
CROP_MODE_CENTER: CropMode
CROP_MODE_RESIZE: CropMode
MIX_MODE_UNSPECIFIED: MixMode
MIX_MODE_BATCH: MixMode
MIX_MODE_PAIR: MixMode
MIX_MODE_ELEM: MixMode
DTYPE_UNSPECIFIED: DType
DTYPE_UINT8: DType
DTYPE_FLOAT16: DType
DTYPE_FLOAT32: DType
LAYOUT_UNSPECIFIED: Layout
LAYOUT_NCHW: Layout
LAYOUT_NHWC: Layout
DEVICE_UNSPECIFIED: Device
DEVICE_AUTO: Device
DEVICE_CPU: Device
DEVICE_GPU: Device
ERROR_POLICY_UNSPECIFIED: ErrorPolicy
ERROR_POLICY_SKIP: ErrorPolicy
ERROR_POLICY_FAIL: ErrorPolicy
DAMAGED_POLICY_UNSPECIFIED: DamagedPolicy
DAMAGED_POLICY_REJECT: DamagedPolicy
DAMAGED_POLICY_ACCEPT: DamagedPolicy
TRANSPORT_INLINE: Transport
TRANSPORT_SHM: Transport
TRANSPORT_CUDA_IPC: Transport
TAIL_UNSPECIFIED: Tail
TAIL_PAD: Tail
TAIL_DROP: Tail
TAIL_UNEVEN: Tail

class PipelineSpec(_message.Message):
    __slots__ = ("width", "height", "crop", "flip_prob", "color", "mix", "normalize", "dtype", "layout", "placement", "on_error", "on_damaged", "dct_scaling")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    FLIP_PROB_FIELD_NUMBER: _ClassVar[int]
    COLOR_FIELD_NUMBER: _ClassVar[int]
    MIX_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    ON_ERROR_FIELD_NUMBER: _ClassVar[int]
    ON_DAMAGED_FIELD_NUMBER: _ClassVar[int]
    DCT_SCALING_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    crop: Crop
    flip_prob: float
    color: ColorJitter
    mix: Mix
    normalize: Normalize
    dtype: DType
    layout: Layout
    placement: Placement
    on_error: ErrorPolicy
    on_damaged: DamagedPolicy
    dct_scaling: bool
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., crop: _Optional[_Union[Crop, _Mapping]] = ..., flip_prob: _Optional[float] = ..., color: _Optional[_Union[ColorJitter, _Mapping]] = ..., mix: _Optional[_Union[Mix, _Mapping]] = ..., normalize: _Optional[_Union[Normalize, _Mapping]] = ..., dtype: _Optional[_Union[DType, str]] = ..., layout: _Optional[_Union[Layout, str]] = ..., placement: _Optional[_Union[Placement, _Mapping]] = ..., on_error: _Optional[_Union[ErrorPolicy, str]] = ..., on_damaged: _Optional[_Union[DamagedPolicy, str]] = ..., dct_scaling: _Optional[bool] = ...) -> None: ...

class Crop(_message.Message):
    __slots__ = ("mode", "scale", "ratio", "crop_pct")
    MODE_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    RATIO_FIELD_NUMBER: _ClassVar[int]
    CROP_PCT_FIELD_NUMBER: _ClassVar[int]
    mode: CropMode
    scale: _containers.RepeatedScalarFieldContainer[float]
    ratio: _containers.RepeatedScalarFieldContainer[float]
    crop_pct: float
    def __init__(self, mode: _Optional[_Union[CropMode, str]] = ..., scale: _Optional[_Iterable[float]] = ..., ratio: _Optional[_Iterable[float]] = ..., crop_pct: _Optional[float] = ...) -> None: ...

class ColorJitter(_message.Message):
    __slots__ = ("brightness", "contrast", "saturation")
    BRIGHTNESS_FIELD_NUMBER: _ClassVar[int]
    CONTRAST_FIELD_NUMBER: _ClassVar[int]
    SATURATION_FIELD_NUMBER: _ClassVar[int]
    brightness: float
    contrast: float
    saturation: float
    def __init__(self, brightness: _Optional[float] = ..., contrast: _Optional[float] = ..., saturation: _Optional[float] = ...) -> None: ...

class Mix(_message.Message):
    __slots__ = ("mixup_alpha", "cutmix_alpha", "prob", "switch_prob", "mode", "label_smoothing", "num_classes", "start_epoch", "full_epoch")
    MIXUP_ALPHA_FIELD_NUMBER: _ClassVar[int]
    CUTMIX_ALPHA_FIELD_NUMBER: _ClassVar[int]
    PROB_FIELD_NUMBER: _ClassVar[int]
    SWITCH_PROB_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    LABEL_SMOOTHING_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    START_EPOCH_FIELD_NUMBER: _ClassVar[int]
    FULL_EPOCH_FIELD_NUMBER: _ClassVar[int]
    mixup_alpha: float
    cutmix_alpha: float
    prob: float
    switch_prob: float
    mode: MixMode
    label_smoothing: float
    num_classes: int
    start_epoch: int
    full_epoch: int
    def __init__(self, mixup_alpha: _Optional[float] = ..., cutmix_alpha: _Optional[float] = ..., prob: _Optional[float] = ..., switch_prob: _Optional[float] = ..., mode: _Optional[_Union[MixMode, str]] = ..., label_smoothing: _Optional[float] = ..., num_classes: _Optional[int] = ..., start_epoch: _Optional[int] = ..., full_epoch: _Optional[int] = ...) -> None: ...

class Normalize(_message.Message):
    __slots__ = ("mean", "std")
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ...) -> None: ...

class Placement(_message.Message):
    __slots__ = ("color", "resize", "mix")
    COLOR_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    MIX_FIELD_NUMBER: _ClassVar[int]
    color: Device
    resize: Device
    mix: Device
    def __init__(self, color: _Optional[_Union[Device, str]] = ..., resize: _Optional[_Union[Device, str]] = ..., mix: _Optional[_Union[Device, str]] = ...) -> None: ...

class StreamBatchesRequest(_message.Message):
    __slots__ = ("dataset", "spec", "batch_size", "seed", "start_epoch", "epochs", "rank", "world_size", "no_shuffle", "drop_last", "tail", "prefetch", "start_batch", "transport", "slots", "start_position", "batch_stride", "batch_offset")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    START_EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    NO_SHUFFLE_FIELD_NUMBER: _ClassVar[int]
    DROP_LAST_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_FIELD_NUMBER: _ClassVar[int]
    START_BATCH_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    START_POSITION_FIELD_NUMBER: _ClassVar[int]
    BATCH_STRIDE_FIELD_NUMBER: _ClassVar[int]
    BATCH_OFFSET_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    spec: PipelineSpec
    batch_size: int
    seed: int
    start_epoch: int
    epochs: int
    rank: int
    world_size: int
    no_shuffle: bool
    drop_last: bool
    tail: Tail
    prefetch: int
    start_batch: int
    transport: Transport
    slots: int
    start_position: int
    batch_stride: int
    batch_offset: int
    def __init__(self, dataset: _Optional[str] = ..., spec: _Optional[_Union[PipelineSpec, _Mapping]] = ..., batch_size: _Optional[int] = ..., seed: _Optional[int] = ..., start_epoch: _Optional[int] = ..., epochs: _Optional[int] = ..., rank: _Optional[int] = ..., world_size: _Optional[int] = ..., no_shuffle: _Optional[bool] = ..., drop_last: _Optional[bool] = ..., tail: _Optional[_Union[Tail, str]] = ..., prefetch: _Optional[int] = ..., start_batch: _Optional[int] = ..., transport: _Optional[_Union[Transport, str]] = ..., slots: _Optional[int] = ..., start_position: _Optional[int] = ..., batch_stride: _Optional[int] = ..., batch_offset: _Optional[int] = ...) -> None: ...

class AugmentImagesRequest(_message.Message):
    __slots__ = ("images", "labels", "spec", "seed", "epoch")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    labels: _containers.RepeatedScalarFieldContainer[int]
    spec: PipelineSpec
    seed: int
    epoch: int
    def __init__(self, images: _Optional[_Iterable[bytes]] = ..., labels: _Optional[_Iterable[int]] = ..., spec: _Optional[_Union[PipelineSpec, _Mapping]] = ..., seed: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets",)
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[DatasetInfo]
    def __init__(self, datasets: _Optional[_Iterable[_Union[DatasetInfo, _Mapping]]] = ...) -> None: ...

class DatasetInfo(_message.Message):
    __slots__ = ("name", "format", "samples", "num_classes", "classes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    name: str
    format: str
    samples: int
    num_classes: int
    classes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., format: _Optional[str] = ..., samples: _Optional[int] = ..., num_classes: _Optional[int] = ..., classes: _Optional[_Iterable[str]] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("version", "batch_device", "kernels_compiled", "gpu_unavailable_reason", "worker_threads", "limits", "dtypes", "layouts", "crop_modes", "mix_modes", "transports", "jpeg_decoder", "jpeg_decoder_note")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BATCH_DEVICE_FIELD_NUMBER: _ClassVar[int]
    KERNELS_COMPILED_FIELD_NUMBER: _ClassVar[int]
    GPU_UNAVAILABLE_REASON_FIELD_NUMBER: _ClassVar[int]
    WORKER_THREADS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    DTYPES_FIELD_NUMBER: _ClassVar[int]
    LAYOUTS_FIELD_NUMBER: _ClassVar[int]
    CROP_MODES_FIELD_NUMBER: _ClassVar[int]
    MIX_MODES_FIELD_NUMBER: _ClassVar[int]
    TRANSPORTS_FIELD_NUMBER: _ClassVar[int]
    JPEG_DECODER_FIELD_NUMBER: _ClassVar[int]
    JPEG_DECODER_NOTE_FIELD_NUMBER: _ClassVar[int]
    version: str
    batch_device: str
    kernels_compiled: bool
    gpu_unavailable_reason: str
    worker_threads: int
    limits: Limits
    dtypes: _containers.RepeatedScalarFieldContainer[str]
    layouts: _containers.RepeatedScalarFieldContainer[str]
    crop_modes: _containers.RepeatedScalarFieldContainer[str]
    mix_modes: _containers.RepeatedScalarFieldContainer[str]
    transports: _containers.RepeatedScalarFieldContainer[str]
    jpeg_decoder: str
    jpeg_decoder_note: str
    def __init__(self, version: _Optional[str] = ..., batch_device: _Optional[str] = ..., kernels_compiled: _Optional[bool] = ..., gpu_unavailable_reason: _Optional[str] = ..., worker_threads: _Optional[int] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., dtypes: _Optional[_Iterable[str]] = ..., layouts: _Optional[_Iterable[str]] = ..., crop_modes: _Optional[_Iterable[str]] = ..., mix_modes: _Optional[_Iterable[str]] = ..., transports: _Optional[_Iterable[str]] = ..., jpeg_decoder: _Optional[str] = ..., jpeg_decoder_note: _Optional[str] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_request_bytes", "max_batch_bytes", "max_pixels", "max_file_bytes", "max_concurrent_streams", "max_batch_size", "max_prefetch", "max_images_per_request", "max_batch_memory_bytes")
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_FILE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_STREAMS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_PREFETCH_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGES_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_request_bytes: int
    max_batch_bytes: int
    max_pixels: int
    max_file_bytes: int
    max_concurrent_streams: int
    max_batch_size: int
    max_prefetch: int
    max_images_per_request: int
    max_batch_memory_bytes: int
    def __init__(self, max_request_bytes: _Optional[int] = ..., max_batch_bytes: _Optional[int] = ..., max_pixels: _Optional[int] = ..., max_file_bytes: _Optional[int] = ..., max_concurrent_streams: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., max_prefetch: _Optional[int] = ..., max_images_per_request: _Optional[int] = ..., max_batch_memory_bytes: _Optional[int] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("epoch", "index", "images", "labels_a", "labels_b", "lam", "soft_targets", "num_classes", "sample_ids", "errors", "stats", "timings", "device", "transport", "slot", "warnings")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    LABELS_A_FIELD_NUMBER: _ClassVar[int]
    LABELS_B_FIELD_NUMBER: _ClassVar[int]
    LAM_FIELD_NUMBER: _ClassVar[int]
    SOFT_TARGETS_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_IDS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    index: int
    images: Tensor
    labels_a: _containers.RepeatedScalarFieldContainer[int]
    labels_b: _containers.RepeatedScalarFieldContainer[int]
    lam: _containers.RepeatedScalarFieldContainer[float]
    soft_targets: _containers.RepeatedScalarFieldContainer[float]
    num_classes: int
    sample_ids: _containers.RepeatedScalarFieldContainer[int]
    errors: _containers.RepeatedCompositeFieldContainer[SampleError]
    stats: BatchStats
    timings: StageTimings
    device: str
    transport: TransportInfo
    slot: SlotRef
    warnings: _containers.RepeatedCompositeFieldContainer[SampleError]
    def __init__(self, epoch: _Optional[int] = ..., index: _Optional[int] = ..., images: _Optional[_Union[Tensor, _Mapping]] = ..., labels_a: _Optional[_Iterable[int]] = ..., labels_b: _Optional[_Iterable[int]] = ..., lam: _Optional[_Iterable[float]] = ..., soft_targets: _Optional[_Iterable[float]] = ..., num_classes: _Optional[int] = ..., sample_ids: _Optional[_Iterable[int]] = ..., errors: _Optional[_Iterable[_Union[SampleError, _Mapping]]] = ..., stats: _Optional[_Union[BatchStats, _Mapping]] = ..., timings: _Optional[_Union[StageTimings, _Mapping]] = ..., device: _Optional[str] = ..., transport: _Optional[_Union[TransportInfo, _Mapping]] = ..., slot: _Optional[_Union[SlotRef, _Mapping]] = ..., warnings: _Optional[_Iterable[_Union[SampleError, _Mapping]]] = ...) -> None: ...

class TransportInfo(_message.Message):
    __slots__ = ("transport", "fallback_reason", "stream_id", "shm_path", "slot_bytes", "slots", "cuda_ipc_handle", "cuda_device")
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    SHM_PATH_FIELD_NUMBER: _ClassVar[int]
    SLOT_BYTES_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    CUDA_IPC_HANDLE_FIELD_NUMBER: _ClassVar[int]
    CUDA_DEVICE_FIELD_NUMBER: _ClassVar[int]
    transport: Transport
    fallback_reason: str
    stream_id: str
    shm_path: str
    slot_bytes: int
    slots: int
    cuda_ipc_handle: bytes
    cuda_device: int
    def __init__(self, transport: _Optional[_Union[Transport, str]] = ..., fallback_reason: _Optional[str] = ..., stream_id: _Optional[str] = ..., shm_path: _Optional[str] = ..., slot_bytes: _Optional[int] = ..., slots: _Optional[int] = ..., cuda_ipc_handle: _Optional[bytes] = ..., cuda_device: _Optional[int] = ...) -> None: ...

class SlotRef(_message.Message):
    __slots__ = ("slot", "generation", "offset", "length")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    slot: int
    generation: int
    offset: int
    length: int
    def __init__(self, slot: _Optional[int] = ..., generation: _Optional[int] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class ReleaseSlotsRequest(_message.Message):
    __slots__ = ("stream_id", "slots")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    slots: _containers.RepeatedCompositeFieldContainer[SlotRef]
    def __init__(self, stream_id: _Optional[str] = ..., slots: _Optional[_Iterable[_Union[SlotRef, _Mapping]]] = ...) -> None: ...

class ReleaseSlotsResponse(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: int
    def __init__(self, released: _Optional[int] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("shape", "dtype", "layout", "align", "data")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    ALIGN_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: DType
    layout: Layout
    align: bytes
    data: bytes
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[_Union[DType, str]] = ..., layout: _Optional[_Union[Layout, str]] = ..., align: _Optional[bytes] = ..., data: _Optional[bytes] = ...) -> None: ...

class SampleError(_message.Message):
    __slots__ = ("sample_id", "source", "code", "reason")
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    sample_id: int
    source: str
    code: str
    reason: str
    def __init__(self, sample_id: _Optional[int] = ..., source: _Optional[str] = ..., code: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class BatchStats(_message.Message):
    __slots__ = ("mean", "std", "mad", "clipped", "percentile_levels", "percentiles")
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    MAD_FIELD_NUMBER: _ClassVar[int]
    CLIPPED_FIELD_NUMBER: _ClassVar[int]
    PERCENTILE_LEVELS_FIELD_NUMBER: _ClassVar[int]
    PERCENTILES_FIELD_NUMBER: _ClassVar[int]
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    mad: _containers.RepeatedScalarFieldContainer[float]
    clipped: _containers.RepeatedScalarFieldContainer[float]
    percentile_levels: _containers.RepeatedScalarFieldContainer[float]
    percentiles: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ..., mad: _Optional[_Iterable[float]] = ..., clipped: _Optional[_Iterable[float]] = ..., percentile_levels: _Optional[_Iterable[float]] = ..., percentiles: _Optional[_Iterable[float]] = ...) -> None: ...

class StageTimings(_message.Message):
    __slots__ = ("read_ms", "decode_ms", "color_ms", "per_image_wall_ms", "resize_ms", "mix_normalize_ms", "stats_ms", "total_ms", "decoded_by_region", "decoded_scaled", "decoded_progressive", "decoded_whole", "decoded_on_device", "gpu_busy_ms")
    READ_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    COLOR_MS_FIELD_NUMBER: _ClassVar[int]
    PER_IMAGE_WALL_MS_FIELD_NUMBER: _ClassVar[int]
    RESIZE_MS_FIELD_NUMBER: _ClassVar[int]
    MIX_NORMALIZE_MS_FIELD_NUMBER: _ClassVar[int]
    STATS_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    DECODED_BY_REGION_FIELD_NUMBER: _ClassVar[int]
    DECODED_SCALED_FIELD_NUMBER: _ClassVar[int]
    DECODED_PROGRESSIVE_FIELD_NUMBER: _ClassVar[int]
    DECODED_WHOLE_FIELD_NUMBER: _ClassVar[int]
    DECODED_ON_DEVICE_FIELD_NUMBER: _ClassVar[int]
    GPU_BUSY_MS_FIELD_NUMBER: _ClassVar[int]
    read_ms: float
    decode_ms: float
    color_ms: float
    per_image_wall_ms: float
    resize_ms: float
    mix_normalize_ms: float
    stats_ms: float
    total_ms: float
    decoded_by_region: int
    decoded_scaled: int
    decoded_progressive: int
    decoded_whole: int
    decoded_on_device: int
    gpu_busy_ms: float
    def __init__(self, read_ms: _Optional[float] = ..., decode_ms: _Optional[float] = ..., color_ms: _Optional[float] = ..., per_image_wall_ms: _Optional[float] = ..., resize_ms: _Optional[float] = ..., mix_normalize_ms: _Optional[float] = ..., stats_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., decoded_by_region: _Optional[int] = ..., decoded_scaled: _Optional[int] = ..., decoded_progressive: _Optional[int] = ..., decoded_whole: _Optional[int] = ..., decoded_on_device: _Optional[int] = ..., gpu_busy_ms: _Optional[float] = ...) -> None: ...
