"""augserve: augmented image batches from an augserve server, as numpy arrays or torch tensors.

    import augserve
    client = augserve.Client("unix:///run/augserve.sock")
    for batch in client.stream("imagenet", augserve.PipelineSpec(), batch_size=256, epochs=1):
        images, targets = batch.to_torch("cuda")

PyTorch users: `augserve.torch.AugServeIterableDataset` (needs torch).
"""

from augserve.batch import Batch, BatchStats, SampleError, WireError
from augserve.client import BatchStream, Client, DatasetInfo, ServerInfo
from augserve.errors import (
    AugServeError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from augserve.prefetch import Prefetcher, prefetch
from augserve.spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ColorJitter,
    Crop,
    Mix,
    Normalize,
    PipelineSpec,
    Placement,
)

__version__ = "0.1.0"

__all__ = [
    "AugServeError",
    "Batch",
    "BatchStats",
    "BatchStream",
    "Client",
    "ColorJitter",
    "Crop",
    "DatasetInfo",
    "FailedPreconditionError",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "InvalidArgumentError",
    "Mix",
    "Normalize",
    "NotFoundError",
    "OutOfRangeError",
    "PipelineSpec",
    "Placement",
    "Prefetcher",
    "ResourceExhaustedError",
    "SampleError",
    "ServerInfo",
    "UnauthenticatedError",
    "UnavailableError",
    "WireError",
    "prefetch",
]
