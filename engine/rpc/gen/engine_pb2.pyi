from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EngineStatus(_message.Message):
    __slots__ = ("protocol_version", "pid", "clients", "has_run", "run", "started_at")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    HAS_RUN_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    protocol_version: str
    pid: int
    clients: int
    has_run: bool
    run: RunInfo
    started_at: float
    def __init__(self, protocol_version: _Optional[str] = ..., pid: _Optional[int] = ..., clients: _Optional[int] = ..., has_run: _Optional[bool] = ..., run: _Optional[_Union[RunInfo, _Mapping]] = ..., started_at: _Optional[float] = ...) -> None: ...

class RunInfo(_message.Message):
    __slots__ = ("run_id", "run_dir", "state", "active", "job_toml", "step", "total_steps", "message", "resume_from", "client")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_DIR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    JOB_TOML_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    run_dir: str
    state: str
    active: bool
    job_toml: str
    step: int
    total_steps: int
    message: str
    resume_from: str
    client: str
    def __init__(self, run_id: _Optional[str] = ..., run_dir: _Optional[str] = ..., state: _Optional[str] = ..., active: _Optional[bool] = ..., job_toml: _Optional[str] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., message: _Optional[str] = ..., resume_from: _Optional[str] = ..., client: _Optional[str] = ...) -> None: ...

class StartRunRequest(_message.Message):
    __slots__ = ("job_toml", "resume_from", "client")
    JOB_TOML_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    job_toml: str
    resume_from: str
    client: str
    def __init__(self, job_toml: _Optional[str] = ..., resume_from: _Optional[str] = ..., client: _Optional[str] = ...) -> None: ...

class StopRunRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class StopRunReply(_message.Message):
    __slots__ = ("stopping", "run_id")
    STOPPING_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    stopping: bool
    run_id: str
    def __init__(self, stopping: _Optional[bool] = ..., run_id: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("client", "history")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    client: str
    history: bool
    def __init__(self, client: _Optional[str] = ..., history: _Optional[bool] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("client",)
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    client: str
    def __init__(self, client: _Optional[str] = ...) -> None: ...

class ReleaseReply(_message.Message):
    __slots__ = ("exiting",)
    EXITING_FIELD_NUMBER: _ClassVar[int]
    exiting: bool
    def __init__(self, exiting: _Optional[bool] = ...) -> None: ...

class Metric(_message.Message):
    __slots__ = ("step", "kind", "has_worker", "worker", "time", "names", "values")
    STEP_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    HAS_WORKER_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    step: int
    kind: str
    has_worker: bool
    worker: int
    time: float
    names: _containers.RepeatedScalarFieldContainer[str]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, step: _Optional[int] = ..., kind: _Optional[str] = ..., has_worker: _Optional[bool] = ..., worker: _Optional[int] = ..., time: _Optional[float] = ..., names: _Optional[_Iterable[str]] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("step", "total_steps", "elapsed_s", "has_eta", "eta_s")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    HAS_ETA_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    step: int
    total_steps: int
    elapsed_s: float
    has_eta: bool
    eta_s: float
    def __init__(self, step: _Optional[int] = ..., total_steps: _Optional[int] = ..., elapsed_s: _Optional[float] = ..., has_eta: _Optional[bool] = ..., eta_s: _Optional[float] = ...) -> None: ...

class State(_message.Message):
    __slots__ = ("state", "message", "run_dir", "detail_json")
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RUN_DIR_FIELD_NUMBER: _ClassVar[int]
    DETAIL_JSON_FIELD_NUMBER: _ClassVar[int]
    state: str
    message: str
    run_dir: str
    detail_json: str
    def __init__(self, state: _Optional[str] = ..., message: _Optional[str] = ..., run_dir: _Optional[str] = ..., detail_json: _Optional[str] = ...) -> None: ...

class Log(_message.Message):
    __slots__ = ("level", "message", "time")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    level: str
    message: str
    time: float
    def __init__(self, level: _Optional[str] = ..., message: _Optional[str] = ..., time: _Optional[float] = ...) -> None: ...

class Download(_message.Message):
    __slots__ = ("repo_id", "file", "done_bytes", "total_bytes", "files_done", "files_total", "finished")
    REPO_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    DONE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    FILES_DONE_FIELD_NUMBER: _ClassVar[int]
    FILES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    repo_id: str
    file: str
    done_bytes: int
    total_bytes: int
    files_done: int
    files_total: int
    finished: bool
    def __init__(self, repo_id: _Optional[str] = ..., file: _Optional[str] = ..., done_bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ..., files_done: _Optional[int] = ..., files_total: _Optional[int] = ..., finished: _Optional[bool] = ...) -> None: ...

class Ship(_message.Message):
    __slots__ = ("worker", "rank", "sent_bytes", "total_bytes", "files_sent", "files_total", "held_bytes", "file", "rate_bps", "done")
    WORKER_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    SENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    FILES_SENT_FIELD_NUMBER: _ClassVar[int]
    FILES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    HELD_BYTES_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    RATE_BPS_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    worker: str
    rank: int
    sent_bytes: int
    total_bytes: int
    files_sent: int
    files_total: int
    held_bytes: int
    file: str
    rate_bps: float
    done: bool
    def __init__(self, worker: _Optional[str] = ..., rank: _Optional[int] = ..., sent_bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ..., files_sent: _Optional[int] = ..., files_total: _Optional[int] = ..., held_bytes: _Optional[int] = ..., file: _Optional[str] = ..., rate_bps: _Optional[float] = ..., done: _Optional[bool] = ...) -> None: ...

class RunMark(_message.Message):
    __slots__ = ("change", "has_run", "run")
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    HAS_RUN_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    change: str
    has_run: bool
    run: RunInfo
    def __init__(self, change: _Optional[str] = ..., has_run: _Optional[bool] = ..., run: _Optional[_Union[RunInfo, _Mapping]] = ...) -> None: ...

class EngineEvent(_message.Message):
    __slots__ = ("metric", "progress", "state", "log", "mark", "download", "ship")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    MARK_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_FIELD_NUMBER: _ClassVar[int]
    SHIP_FIELD_NUMBER: _ClassVar[int]
    metric: Metric
    progress: Progress
    state: State
    log: Log
    mark: RunMark
    download: Download
    ship: Ship
    def __init__(self, metric: _Optional[_Union[Metric, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., state: _Optional[_Union[State, _Mapping]] = ..., log: _Optional[_Union[Log, _Mapping]] = ..., mark: _Optional[_Union[RunMark, _Mapping]] = ..., download: _Optional[_Union[Download, _Mapping]] = ..., ship: _Optional[_Union[Ship, _Mapping]] = ...) -> None: ...

class EventBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[EngineEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[EngineEvent, _Mapping]]] = ...) -> None: ...
