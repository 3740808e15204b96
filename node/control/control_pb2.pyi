from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ChainStatus(_message.Message):
    __slots__ = ("chain_id", "height", "head")
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    chain_id: str
    height: int
    head: str
    def __init__(self, chain_id: _Optional[str] = ..., height: _Optional[int] = ..., head: _Optional[str] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("node_id", "role", "scheme", "round", "chains", "view", "peers", "drops", "behaviour", "uptime_s", "pid", "watchers_dropped")
    class DropsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    CHAINS_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    DROPS_FIELD_NUMBER: _ClassVar[int]
    BEHAVIOUR_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    WATCHERS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    role: str
    scheme: str
    round: int
    chains: _containers.RepeatedCompositeFieldContainer[ChainStatus]
    view: int
    peers: int
    drops: _containers.ScalarMap[str, int]
    behaviour: str
    uptime_s: float
    pid: int
    watchers_dropped: int
    def __init__(self, node_id: _Optional[str] = ..., role: _Optional[str] = ..., scheme: _Optional[str] = ..., round: _Optional[int] = ..., chains: _Optional[_Iterable[_Union[ChainStatus, _Mapping]]] = ..., view: _Optional[int] = ..., peers: _Optional[int] = ..., drops: _Optional[_Mapping[str, int]] = ..., behaviour: _Optional[str] = ..., uptime_s: _Optional[float] = ..., pid: _Optional[int] = ..., watchers_dropped: _Optional[int] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MetricRecord(_message.Message):
    __slots__ = ("event", "fields_json")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    FIELDS_JSON_FIELD_NUMBER: _ClassVar[int]
    event: str
    fields_json: str
    def __init__(self, event: _Optional[str] = ..., fields_json: _Optional[str] = ...) -> None: ...

class BehaviourRequest(_message.Message):
    __slots__ = ("behaviour", "params_json", "from_round")
    BEHAVIOUR_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    FROM_ROUND_FIELD_NUMBER: _ClassVar[int]
    behaviour: str
    params_json: str
    from_round: int
    def __init__(self, behaviour: _Optional[str] = ..., params_json: _Optional[str] = ..., from_round: _Optional[int] = ...) -> None: ...

class BehaviourReply(_message.Message):
    __slots__ = ("from_round", "behaviour")
    FROM_ROUND_FIELD_NUMBER: _ClassVar[int]
    BEHAVIOUR_FIELD_NUMBER: _ClassVar[int]
    from_round: int
    behaviour: str
    def __init__(self, from_round: _Optional[int] = ..., behaviour: _Optional[str] = ...) -> None: ...

class StopRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StopReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StartRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StartReply(_message.Message):
    __slots__ = ("already_started",)
    ALREADY_STARTED_FIELD_NUMBER: _ClassVar[int]
    already_started: bool
    def __init__(self, already_started: _Optional[bool] = ...) -> None: ...
