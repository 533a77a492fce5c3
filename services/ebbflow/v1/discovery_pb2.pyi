from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ServiceInstance(_message.Message):
    __slots__ = ("service", "instance_id", "grpc_address", "metrics_address", "host", "pid", "started_unix_s", "heartbeat_unix_s", "version", "restarts", "last_exit", "router_address")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    METRICS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    LAST_EXIT_FIELD_NUMBER: _ClassVar[int]
    ROUTER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance_id: str
    grpc_address: str
    metrics_address: str
    host: str
    pid: int
    started_unix_s: float
    heartbeat_unix_s: float
    version: str
    restarts: int
    last_exit: str
    router_address: str
    def __init__(self, service: _Optional[str] = ..., instance_id: _Optional[str] = ..., grpc_address: _Optional[str] = ..., metrics_address: _Optional[str] = ..., host: _Optional[str] = ..., pid: _Optional[int] = ..., started_unix_s: _Optional[float] = ..., heartbeat_unix_s: _Optional[float] = ..., version: _Optional[str] = ..., restarts: _Optional[int] = ..., last_exit: _Optional[str] = ..., router_address: _Optional[str] = ...) -> None: ...

class SupervisedService(_message.Message):
    __slots__ = ("service", "state", "pid", "restarts", "last_exit", "last_exit_unix_s", "next_start_unix_s", "grpc_address", "metrics_address")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    LAST_EXIT_FIELD_NUMBER: _ClassVar[int]
    LAST_EXIT_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    NEXT_START_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    METRICS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    service: str
    state: str
    pid: int
    restarts: int
    last_exit: str
    last_exit_unix_s: float
    next_start_unix_s: float
    grpc_address: str
    metrics_address: str
    def __init__(self, service: _Optional[str] = ..., state: _Optional[str] = ..., pid: _Optional[int] = ..., restarts: _Optional[int] = ..., last_exit: _Optional[str] = ..., last_exit_unix_s: _Optional[float] = ..., next_start_unix_s: _Optional[float] = ..., grpc_address: _Optional[str] = ..., metrics_address: _Optional[str] = ...) -> None: ...

class Supervisor(_message.Message):
    __slots__ = ("instance_id", "host", "pid", "heartbeat_unix_s", "services", "nats_url", "nats_restarts", "nats_last_exit", "nats_last_exit_unix_s")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    NATS_URL_FIELD_NUMBER: _ClassVar[int]
    NATS_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    NATS_LAST_EXIT_FIELD_NUMBER: _ClassVar[int]
    NATS_LAST_EXIT_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    host: str
    pid: int
    heartbeat_unix_s: float
    services: _containers.RepeatedCompositeFieldContainer[SupervisedService]
    nats_url: str
    nats_restarts: int
    nats_last_exit: str
    nats_last_exit_unix_s: float
    def __init__(self, instance_id: _Optional[str] = ..., host: _Optional[str] = ..., pid: _Optional[int] = ..., heartbeat_unix_s: _Optional[float] = ..., services: _Optional[_Iterable[_Union[SupervisedService, _Mapping]]] = ..., nats_url: _Optional[str] = ..., nats_restarts: _Optional[int] = ..., nats_last_exit: _Optional[str] = ..., nats_last_exit_unix_s: _Optional[float] = ...) -> None: ...
