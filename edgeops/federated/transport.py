"""Flower plumbing: the model as Flower records, the ClientApps (Message API, and SecAgg+ with client-side clipping)
around each client's local training, and `LoopbackGrid`, the in-process transport that checks every reply."""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from flwr.serverapp import Grid

from edgeops.errors import FederatedError
from edgeops.spec import PipelineSpec

if TYPE_CHECKING:
    import torch
    from flwr.app import ArrayRecord, Context, Message, RecordDict
    from flwr.client import Client
    from flwr.clientapp import ClientApp
    from flwr.common import NDArrays, Scalar
    from flwr.supercore.run import Run


# ---------------------------------------------------------------- model <-> Flower records
def model_state(model: torch.nn.Module) -> list[np.ndarray]:
    """The model's state_dict as numpy arrays, in state_dict order (what travels between server and clients)."""
    return [tensor.detach().cpu().numpy().copy() for tensor in model.state_dict().values()]


def set_model_state(model: torch.nn.Module, arrays: list[np.ndarray]) -> None:
    import torch

    model.load_state_dict(
        {name: torch.from_numpy(np.array(array)) for name, array in zip(model.state_dict(), arrays, strict=False)}
    )


def to_arrays(model: torch.nn.Module) -> ArrayRecord:
    from flwr.app import Array, ArrayRecord

    return ArrayRecord(
        {name: Array(array) for name, array in zip(model.state_dict(), model_state(model), strict=False)}
    )


# ---------------------------------------------------------------- clients
@dataclass
class ClientBehaviour:
    """Simulated misbehaviour, for tests and benchmarks: drop out in some rounds, scale the update, send garbage."""

    disconnect_rounds: set[int] = field(default_factory=set)
    scale_update: float = 1.0
    malformed: bool = False
    oversized_mb: float = 0.0


class LocalTrainer:
    """What every client does with the global model: local epochs of SGD on its own partition (FedProx term when
    configured). Shared by the Message-API ClientApp and the SecAgg+ client."""

    def __init__(
        self,
        spec: PipelineSpec,
        partitions: dict[int, tuple[np.ndarray, np.ndarray]],
        feature_names: list[str],
        classes: int,
    ):
        from edgeops.scaling import feature_bounds

        self.spec, self.fed, self.partitions = spec, spec.training.federated, partitions
        self.feature_names, self.classes = feature_names, classes
        self.low, self.high = feature_bounds(spec, feature_names)

    def fresh_model(self) -> torch.nn.Module:
        from edgeops.models import build_model
        from edgeops.scaling import model_input_bounds

        return build_model(
            self.spec.model,
            len(self.feature_names),
            self.classes,
            self.spec.dataset.image_shape,
            *model_input_bounds(self.spec, self.feature_names),
        )

    def train(
        self, partition: int, state: list[np.ndarray], server_round: int, mu: float
    ) -> tuple[list[np.ndarray], int, float]:
        import torch

        torch.set_num_threads(1)
        x, y = self.partitions[partition]
        model = self.fresh_model()
        set_model_state(model, state)
        global_params = [p.detach().clone() for p in model.parameters()]
        generator = torch.Generator().manual_seed(self.fed.seed * 100_003 + server_round * 1009 + partition)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
            batch_size=self.fed.local_batch_size,
            shuffle=True,
            generator=generator,
        )
        optimizer = torch.optim.SGD(model.parameters(), lr=self.fed.learning_rate, momentum=self.fed.momentum)
        criterion = torch.nn.CrossEntropyLoss()
        model.train()
        losses = []
        for _ in range(self.fed.local_epochs):
            for batch_x, batch_y in loader:
                optimizer.zero_grad()
                loss = criterion(model(batch_x), batch_y)
                if mu > 0:
                    loss = loss + mu / 2 * sum(
                        ((p - g) ** 2).sum() for p, g in zip(model.parameters(), global_params, strict=False)
                    )
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
        return model_state(model), len(x), float(np.mean(losses))


def make_client_app(trainer: LocalTrainer) -> ClientApp:
    """A Flower ClientApp (Message API) around the local trainer."""
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        config, received = msg.content.config_records["config"], msg.content.array_records["arrays"]
        server_round, proximal_mu = config["server-round"], config.get("proximal-mu", 0.0)
        if not isinstance(server_round, int) or not isinstance(proximal_mu, int | float):
            raise FederatedError(
                f"train message: expected an integer server-round and a numeric proximal-mu, "
                f"got {server_round!r} and {proximal_mu!r}"
            )
        state, examples, loss = trainer.train(
            int(context.node_config["partition-id"]), received.to_numpy_ndarrays(), server_round, float(proximal_mu)
        )
        arrays = ArrayRecord({name: Array(value) for name, value in zip(received.keys(), state, strict=False)})
        metrics = MetricRecord({"num-examples": examples, "uniform-weight": 1, "train-loss": loss})
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

    return app


def make_secure_client_app(trainer: LocalTrainer, clip_on_client: bool, uniform_weights: bool) -> ClientApp:
    """A Flower ClientApp for the SecAgg+ workflow: the update is clipped on the client (fixedclipping_mod, when DP)
    and masked (secaggplus_mod) before it leaves; the server only ever sees the unmasked sum."""
    from flwr.client import NumPyClient
    from flwr.client.mod import fixedclipping_mod, secaggplus_mod
    from flwr.clientapp import ClientApp

    class SecureClient(NumPyClient):
        def __init__(self, partition: int) -> None:
            self.partition = partition

        def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
            state, examples, loss = trainer.train(self.partition, parameters, int(config.get("server-round", 0)), 0.0)
            return state, 1 if uniform_weights else examples, {"train-loss": loss}

    def client_fn(context: Context) -> Client:
        return SecureClient(int(context.node_config["partition-id"])).to_client()

    # fixedclipping_mod must be the last to touch the parameters (innermost), before secaggplus_mod masks them.
    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod, *([fixedclipping_mod] if clip_on_client else [])])


# ---------------------------------------------------------------- the grid
class LoopbackGrid(Grid):
    """A Flower Grid whose nodes are ClientApps in this process (see the edgeops.federated docstring)."""

    def __init__(
        self,
        client_app: Callable[[Message, Context], Message],
        *,
        partitions: int,
        behaviours: dict[int, ClientBehaviour],
        max_update_bytes: int,
        min_clients: int,
        clipping_norm: float | None,
        inspect_updates: bool = True,
    ) -> None:
        """`inspect_updates` False: transport only (SecAgg+: the server must not and cannot look at one client's
        update)."""
        from flwr.app import Context, RecordDict
        from flwr.supercore.run import Run

        self.client_app, self.behaviours = client_app, behaviours
        self.max_update_bytes, self.min_clients, self.clipping_norm = max_update_bytes, min_clients, clipping_norm
        self.inspect_updates = inspect_updates
        self.contexts = {
            node: Context(
                run_id=1, node_id=node, node_config={"partition-id": node - 1}, state=RecordDict(), run_config={}
            )
            for node in range(1, partitions + 1)
        }
        self.rounds: list[dict[str, Any]] = []
        self.exchanges: list[dict[str, Any]] = []  # secure mode: one entry per protocol stage
        self._run = Run.create_empty(1)

    # Grid's abstract interface
    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        from flwr.app import Message

        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError("LoopbackGrid delivers in send_and_receive")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError("LoopbackGrid delivers in send_and_receive")

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        from flwr.app import Error, Message

        messages = list(messages)
        if not messages:
            return []
        content = messages[0].content
        server_round = (
            int(cast(int, content["config"]["server-round"]))
            if "config" in content.config_records
            else int(messages[0].metadata.group_id or 0)
        )
        is_train = messages[0].metadata.message_type.startswith("train") and self.inspect_updates
        stage = (
            content.config_records["secaggplus_configs"].get("stage")
            if "secaggplus_configs" in content.config_records
            else None
        )
        # Under SecAgg+ a client drops out after the key exchange (the dropout the protocol is built to survive; one
        # that never answers the setup stage makes Flower 1.41's unmask stage fail on its clients with a KeyError).
        dropout_stage = stage is None or stage in {"collect_masked_vectors", "unmask"}
        replies: list[Message] = []
        report: dict[str, Any] = {"round": server_round, "sampled": len(messages), "clients": {}}
        for message in messages:
            node = message.metadata.dst_node_id
            partition = node - 1
            behaviour = self.behaviours.get(partition, ClientBehaviour())
            message.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            message.metadata.__dict__["_src_node_id"] = 0
            if server_round in behaviour.disconnect_rounds and dropout_stage:
                report["clients"][partition] = {"status": "disconnected"}
                continue
            started = time.perf_counter()
            try:
                # Each client gets its own copy, as over a network: messages of one stage may share content objects.
                reply = self.client_app(copy.deepcopy(message), self.contexts[node])
            except Exception as err:  # a crashing client is one failed reply, not a failed round
                reply = Message(
                    Error(code=1, reason=f"client error: {type(err).__name__}: {err}"[:300]), reply_to=message
                )
            entry: dict[str, Any] = {"status": "ok", "seconds": round(time.perf_counter() - started, 3)}
            if is_train and not reply.has_error():
                reply = self._misbehave(reply, message, behaviour)
                problem, norm = self._inspect(reply, message)
                if problem:
                    entry = {"status": "rejected", "reason": problem}
                    reply = Message(Error(code=2, reason=problem), reply_to=message)
                else:
                    entry.update(
                        update_norm=round(cast(float, norm), 4),
                        clipped=bool(self.clipping_norm and cast(float, norm) > self.clipping_norm),
                    )
            elif reply.has_error():
                entry = {"status": "error", "reason": reply.error.reason}
            report["clients"][partition] = entry
            reply.metadata.__dict__["_src_node_id"] = node
            replies.append(reply)
        usable = sum(1 for r in replies if not r.has_error())
        report["usable"] = usable
        if not self.inspect_updates:
            self.exchanges.append({**report, "stage": stage or messages[0].metadata.message_type})
            return replies
        if is_train:
            norms = [c["update_norm"] for c in report["clients"].values() if "update_norm" in c]
            if norms:
                median = float(np.median(norms))
                for c in report["clients"].values():
                    if "update_norm" in c and c["update_norm"] > 3 * max(median, 1e-12):
                        c["outlier"] = f"update norm {c['update_norm']:.3g} > 3x the round median {median:.3g}"
            self.rounds.append(report)
            if usable < self.min_clients:
                raise FederatedError(
                    f"round {server_round}: only {usable} usable client updates of {len(messages)} sampled; "
                    f"the declaration needs at least {self.min_clients}: "
                    + json.dumps(report["clients"], default=str)[:1500]
                )
        return replies

    # -------------------------------------------------------------- reply checks
    @staticmethod
    def _misbehave(reply: Message, message: Message, behaviour: ClientBehaviour) -> Message:
        from flwr.app import Array, ArrayRecord

        if behaviour.scale_update == 1.0 and not behaviour.malformed and not behaviour.oversized_mb:
            return reply
        sent = cast("ArrayRecord", message.content["arrays"]).to_numpy_ndarrays()
        record = cast("ArrayRecord", reply.content["arrays"])
        names, arrays = list(record.keys()), record.to_numpy_ndarrays()
        if behaviour.scale_update != 1.0:
            arrays = [g + behaviour.scale_update * (a - g) for a, g in zip(arrays, sent, strict=False)]
        if behaviour.malformed:
            arrays[0] = np.full((3, 3), np.nan, dtype=np.float32)
        if behaviour.oversized_mb:
            names.append("padding")
            arrays.append(np.zeros(int(behaviour.oversized_mb * 2**20 / 4), dtype=np.float32))
        reply.content["arrays"] = ArrayRecord({n: Array(np.asarray(a)) for n, a in zip(names, arrays, strict=False)})
        return reply

    def _inspect(self, reply: Message, message: Message) -> tuple[str | None, float | None]:
        """(why the update is rejected, or None; its L2 distance from the global model when accepted)."""
        if "arrays" not in reply.content.array_records:
            return "no model update in the reply", None
        sent, got = cast("ArrayRecord", message.content["arrays"]), cast("ArrayRecord", reply.content["arrays"])
        sent_arrays, got_arrays = sent.to_numpy_ndarrays(), got.to_numpy_ndarrays()
        size = sum(a.nbytes for a in got_arrays)
        if size > self.max_update_bytes:
            return f"update of {size} bytes exceeds the {self.max_update_bytes}-byte limit", None
        if list(got.keys()) != list(sent.keys()):
            return f"update names {sorted(set(got.keys()) ^ set(sent.keys()))[:5]} differ from the global model's", None
        for name, a, g in zip(got.keys(), got_arrays, sent_arrays, strict=False):
            if a.shape != g.shape or a.dtype != g.dtype:
                return f"{name}: shape {a.shape} {a.dtype}, the global model has {g.shape} {g.dtype}", None
            if not np.isfinite(a).all():
                return f"{name}: non-finite values", None
        return None, float(
            np.sqrt(
                sum(
                    float(((a.astype(np.float64) - g) ** 2).sum())
                    for a, g in zip(got_arrays, sent_arrays, strict=False)
                )
            )
        )
