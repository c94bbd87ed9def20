from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("data", "shape", "dtype")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    def __init__(self, data: _Optional[bytes] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("worker_id", "protocol_version", "hostname", "chip", "memory_bytes", "mlx_version", "orchard_version", "busy", "platform", "ring_port")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    CHIP_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MLX_VERSION_FIELD_NUMBER: _ClassVar[int]
    ORCHARD_VERSION_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    RING_PORT_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    protocol_version: str
    hostname: str
    chip: str
    memory_bytes: int
    mlx_version: str
    orchard_version: str
    busy: bool
    platform: str
    ring_port: int
    def __init__(self, worker_id: _Optional[str] = ..., protocol_version: _Optional[str] = ..., hostname: _Optional[str] = ..., chip: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., mlx_version: _Optional[str] = ..., orchard_version: _Optional[str] = ..., busy: _Optional[bool] = ..., platform: _Optional[str] = ..., ring_port: _Optional[int] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("sha256", "name", "offset", "data", "last")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    name: str
    offset: int
    data: bytes
    last: bool
    def __init__(self, sha256: _Optional[str] = ..., name: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., last: _Optional[bool] = ...) -> None: ...

class PutFileReply(_message.Message):
    __slots__ = ("sha256", "size")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size: int
    def __init__(self, sha256: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class HasFileRequest(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class HasFileReply(_message.Message):
    __slots__ = ("present",)
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    present: bool
    def __init__(self, present: _Optional[bool] = ...) -> None: ...

class OpenFileRequest(_message.Message):
    __slots__ = ("sha256", "name", "size", "checksum", "checksum_at_end")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_AT_END_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    name: str
    size: int
    checksum: str
    checksum_at_end: bool
    def __init__(self, sha256: _Optional[str] = ..., name: _Optional[str] = ..., size: _Optional[int] = ..., checksum: _Optional[str] = ..., checksum_at_end: _Optional[bool] = ...) -> None: ...

class OpenFileReply(_message.Message):
    __slots__ = ("present", "offset", "bulk_port", "ticket", "bulk_tls", "bulk_sealed", "checksum_at_end")
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    BULK_PORT_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    BULK_TLS_FIELD_NUMBER: _ClassVar[int]
    BULK_SEALED_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_AT_END_FIELD_NUMBER: _ClassVar[int]
    present: bool
    offset: int
    bulk_port: int
    ticket: bytes
    bulk_tls: bool
    bulk_sealed: bool
    checksum_at_end: bool
    def __init__(self, present: _Optional[bool] = ..., offset: _Optional[int] = ..., bulk_port: _Optional[int] = ..., ticket: _Optional[bytes] = ..., bulk_tls: _Optional[bool] = ..., bulk_sealed: _Optional[bool] = ..., checksum_at_end: _Optional[bool] = ...) -> None: ...

class SetupJobRequest(_message.Message):
    __slots__ = ("job_toml", "rank", "world_size", "peers", "run_id", "files", "group_token", "mlx_hostfile", "peer_certs", "protocol_version")
    class FilesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_TOML_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    GROUP_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MLX_HOSTFILE_FIELD_NUMBER: _ClassVar[int]
    PEER_CERTS_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    job_toml: str
    rank: int
    world_size: int
    peers: _containers.RepeatedScalarFieldContainer[str]
    run_id: str
    files: _containers.ScalarMap[str, str]
    group_token: str
    mlx_hostfile: str
    peer_certs: _containers.RepeatedScalarFieldContainer[str]
    protocol_version: str
    def __init__(self, job_toml: _Optional[str] = ..., rank: _Optional[int] = ..., world_size: _Optional[int] = ..., peers: _Optional[_Iterable[str]] = ..., run_id: _Optional[str] = ..., files: _Optional[_Mapping[str, str]] = ..., group_token: _Optional[str] = ..., mlx_hostfile: _Optional[str] = ..., peer_certs: _Optional[_Iterable[str]] = ..., protocol_version: _Optional[str] = ...) -> None: ...

class SetupJobReply(_message.Message):
    __slots__ = ("train_items", "trainable_params", "message")
    TRAIN_ITEMS_FIELD_NUMBER: _ClassVar[int]
    TRAINABLE_PARAMS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    train_items: int
    trainable_params: int
    message: str
    def __init__(self, train_items: _Optional[int] = ..., trainable_params: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class StepRequest(_message.Message):
    __slots__ = ("step", "learning_rate", "shares", "micro_batches")
    STEP_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCHES_FIELD_NUMBER: _ClassVar[int]
    step: int
    learning_rate: float
    shares: _containers.RepeatedScalarFieldContainer[int]
    micro_batches: int
    def __init__(self, step: _Optional[int] = ..., learning_rate: _Optional[float] = ..., shares: _Optional[_Iterable[int]] = ..., micro_batches: _Optional[int] = ...) -> None: ...

class StepReply(_message.Message):
    __slots__ = ("step", "loss_sum", "tokens", "grad_norm", "compute_s", "comm_s", "peak_memory_bytes", "skipped", "loss_scale", "work_tokens", "grad_s", "comm_hidden_s", "group_loss_sum", "group_tokens")
    STEP_FIELD_NUMBER: _ClassVar[int]
    LOSS_SUM_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    COMM_S_FIELD_NUMBER: _ClassVar[int]
    PEAK_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    LOSS_SCALE_FIELD_NUMBER: _ClassVar[int]
    WORK_TOKENS_FIELD_NUMBER: _ClassVar[int]
    GRAD_S_FIELD_NUMBER: _ClassVar[int]
    COMM_HIDDEN_S_FIELD_NUMBER: _ClassVar[int]
    GROUP_LOSS_SUM_FIELD_NUMBER: _ClassVar[int]
    GROUP_TOKENS_FIELD_NUMBER: _ClassVar[int]
    step: int
    loss_sum: float
    tokens: int
    grad_norm: float
    compute_s: float
    comm_s: float
    peak_memory_bytes: float
    skipped: bool
    loss_scale: float
    work_tokens: int
    grad_s: float
    comm_hidden_s: float
    group_loss_sum: float
    group_tokens: int
    def __init__(self, step: _Optional[int] = ..., loss_sum: _Optional[float] = ..., tokens: _Optional[int] = ..., grad_norm: _Optional[float] = ..., compute_s: _Optional[float] = ..., comm_s: _Optional[float] = ..., peak_memory_bytes: _Optional[float] = ..., skipped: _Optional[bool] = ..., loss_scale: _Optional[float] = ..., work_tokens: _Optional[int] = ..., grad_s: _Optional[float] = ..., comm_hidden_s: _Optional[float] = ..., group_loss_sum: _Optional[float] = ..., group_tokens: _Optional[int] = ...) -> None: ...

class EvaluateRequest(_message.Message):
    __slots__ = ("step", "max_batches")
    STEP_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCHES_FIELD_NUMBER: _ClassVar[int]
    step: int
    max_batches: int
    def __init__(self, step: _Optional[int] = ..., max_batches: _Optional[int] = ...) -> None: ...

class EvaluateReply(_message.Message):
    __slots__ = ("loss_sum", "tokens")
    LOSS_SUM_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    loss_sum: float
    tokens: int
    def __init__(self, loss_sum: _Optional[float] = ..., tokens: _Optional[int] = ...) -> None: ...

class GetStateRequest(_message.Message):
    __slots__ = ("step", "adapter", "params_only")
    STEP_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    PARAMS_ONLY_FIELD_NUMBER: _ClassVar[int]
    step: int
    adapter: bool
    params_only: bool
    def __init__(self, step: _Optional[int] = ..., adapter: _Optional[bool] = ..., params_only: _Optional[bool] = ...) -> None: ...

class StateChunk(_message.Message):
    __slots__ = ("name", "tensor", "meta_json", "offset", "last")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    META_JSON_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    name: str
    tensor: Tensor
    meta_json: bytes
    offset: int
    last: bool
    def __init__(self, name: _Optional[str] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ..., meta_json: _Optional[bytes] = ..., offset: _Optional[int] = ..., last: _Optional[bool] = ...) -> None: ...

class PutStateReply(_message.Message):
    __slots__ = ("step",)
    STEP_FIELD_NUMBER: _ClassVar[int]
    step: int
    def __init__(self, step: _Optional[int] = ...) -> None: ...

class MetricsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MetricRow(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: bytes
    def __init__(self, json: _Optional[bytes] = ...) -> None: ...

class StopRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class StopReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RegroupRequest(_message.Message):
    __slots__ = ("rank", "world_size", "peers", "group_token", "peer_certs")
    RANK_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    GROUP_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PEER_CERTS_FIELD_NUMBER: _ClassVar[int]
    rank: int
    world_size: int
    peers: _containers.RepeatedScalarFieldContainer[str]
    group_token: str
    peer_certs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, rank: _Optional[int] = ..., world_size: _Optional[int] = ..., peers: _Optional[_Iterable[str]] = ..., group_token: _Optional[str] = ..., peer_certs: _Optional[_Iterable[str]] = ...) -> None: ...

class RegroupReply(_message.Message):
    __slots__ = ("step", "regroup_s")
    STEP_FIELD_NUMBER: _ClassVar[int]
    REGROUP_S_FIELD_NUMBER: _ClassVar[int]
    step: int
    regroup_s: float
    def __init__(self, step: _Optional[int] = ..., regroup_s: _Optional[float] = ...) -> None: ...

class StateSlice(_message.Message):
    __slots__ = ("rank", "lo", "hi")
    RANK_FIELD_NUMBER: _ClassVar[int]
    LO_FIELD_NUMBER: _ClassVar[int]
    HI_FIELD_NUMBER: _ClassVar[int]
    rank: int
    lo: int
    hi: int
    def __init__(self, rank: _Optional[int] = ..., lo: _Optional[int] = ..., hi: _Optional[int] = ...) -> None: ...

class PullStateRequest(_message.Message):
    __slots__ = ("step", "params_from", "moments")
    STEP_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FROM_FIELD_NUMBER: _ClassVar[int]
    MOMENTS_FIELD_NUMBER: _ClassVar[int]
    step: int
    params_from: int
    moments: _containers.RepeatedCompositeFieldContainer[StateSlice]
    def __init__(self, step: _Optional[int] = ..., params_from: _Optional[int] = ..., moments: _Optional[_Iterable[_Union[StateSlice, _Mapping]]] = ...) -> None: ...

class PullStateReply(_message.Message):
    __slots__ = ("step", "pull_s", "received_bytes")
    STEP_FIELD_NUMBER: _ClassVar[int]
    PULL_S_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    step: int
    pull_s: float
    received_bytes: int
    def __init__(self, step: _Optional[int] = ..., pull_s: _Optional[float] = ..., received_bytes: _Optional[int] = ...) -> None: ...

class ProbeRequest(_message.Message):
    __slots__ = ("payload", "run_benchmark", "benchmark_s", "protocol_version")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    RUN_BENCHMARK_FIELD_NUMBER: _ClassVar[int]
    BENCHMARK_S_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    run_benchmark: bool
    benchmark_s: float
    protocol_version: str
    def __init__(self, payload: _Optional[bytes] = ..., run_benchmark: _Optional[bool] = ..., benchmark_s: _Optional[float] = ..., protocol_version: _Optional[str] = ...) -> None: ...

class ProbeReply(_message.Message):
    __slots__ = ("free_memory_bytes", "matmul_gflops", "received_bytes")
    FREE_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MATMUL_GFLOPS_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    free_memory_bytes: int
    matmul_gflops: float
    received_bytes: int
    def __init__(self, free_memory_bytes: _Optional[int] = ..., matmul_gflops: _Optional[float] = ..., received_bytes: _Optional[int] = ...) -> None: ...

class CollectiveChunk(_message.Message):
    __slots__ = ("group_token", "op_id", "src", "part", "offset", "total", "data", "dtype")
    GROUP_TOKEN_FIELD_NUMBER: _ClassVar[int]
    OP_ID_FIELD_NUMBER: _ClassVar[int]
    SRC_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    group_token: str
    op_id: int
    src: int
    part: int
    offset: int
    total: int
    data: bytes
    dtype: str
    def __init__(self, group_token: _Optional[str] = ..., op_id: _Optional[int] = ..., src: _Optional[int] = ..., part: _Optional[int] = ..., offset: _Optional[int] = ..., total: _Optional[int] = ..., data: _Optional[bytes] = ..., dtype: _Optional[str] = ...) -> None: ...

class CollectiveAck(_message.Message):
    __slots__ = ("op_id",)
    OP_ID_FIELD_NUMBER: _ClassVar[int]
    op_id: int
    def __init__(self, op_id: _Optional[int] = ...) -> None: ...

class FetchStateRequest(_message.Message):
    __slots__ = ("group_token", "step", "params", "lo", "hi", "src")
    GROUP_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    LO_FIELD_NUMBER: _ClassVar[int]
    HI_FIELD_NUMBER: _ClassVar[int]
    SRC_FIELD_NUMBER: _ClassVar[int]
    group_token: str
    step: int
    params: bool
    lo: int
    hi: int
    src: int
    def __init__(self, group_token: _Optional[str] = ..., step: _Optional[int] = ..., params: _Optional[bool] = ..., lo: _Optional[int] = ..., hi: _Optional[int] = ..., src: _Optional[int] = ...) -> None: ...

class PairStartRequest(_message.Message):
    __slots__ = ("client_id", "client_name", "client_fingerprint", "worker_fingerprint", "spake_msg")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    WORKER_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SPAKE_MSG_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    client_name: str
    client_fingerprint: str
    worker_fingerprint: str
    spake_msg: bytes
    def __init__(self, client_id: _Optional[str] = ..., client_name: _Optional[str] = ..., client_fingerprint: _Optional[str] = ..., worker_fingerprint: _Optional[str] = ..., spake_msg: _Optional[bytes] = ...) -> None: ...

class PairStartReply(_message.Message):
    __slots__ = ("session_id", "worker_id", "spake_msg")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SPAKE_MSG_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    worker_id: str
    spake_msg: bytes
    def __init__(self, session_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., spake_msg: _Optional[bytes] = ...) -> None: ...

class PairFinishRequest(_message.Message):
    __slots__ = ("session_id", "client_confirm")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_CONFIRM_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    client_confirm: bytes
    def __init__(self, session_id: _Optional[str] = ..., client_confirm: _Optional[bytes] = ...) -> None: ...

class PairFinishReply(_message.Message):
    __slots__ = ("worker_confirm",)
    WORKER_CONFIRM_FIELD_NUMBER: _ClassVar[int]
    worker_confirm: bytes
    def __init__(self, worker_confirm: _Optional[bytes] = ...) -> None: ...
