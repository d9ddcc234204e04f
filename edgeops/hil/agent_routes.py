"""The device agent's optional routes, added by edgeops.hil.agent.create_app when the agent has an updater: the
delivery endpoints (identity, status, bundles, rollback, infer) and, with local data, on-device personalization of the
active model (with its privacy ledger charge for DP jobs). edgeops.hil.agent re-exports these names.
"""

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fastapi import FastAPI

    from edgeops.hil.updater import Updater

RETURNS_ORDER = ("nothing", "metrics", "delta")  # each reveals more about the device's data than the one before


def _add_personalization_route(
    app: "FastAPI",
    updater: "Updater",
    authorized: Callable[..., None],
    local_data: Path,
    allow_returns: str,
    device_budget: tuple[float, float] | None = None,
) -> None:
    import hashlib
    import uuid
    from typing import Literal

    from fastapi import Depends, HTTPException
    from pydantic import BaseModel, Field

    from edgeops.errors import PrivacyBudgetError
    from edgeops.hil.personalize import (
        DEFAULT_DEVICE_DELTA,
        DEFAULT_DEVICE_EPSILON,
        DEFAULT_JOB_DELTA,
        PersonalizationError,
        device_ledger,
        job_epsilon,
        load_local_data,
        personalize,
    )
    from edgeops.hil.updater import UpdateRefused
    from edgeops.ledger import code_version
    from edgeops.ledger_keys import Computation

    budget_epsilon, budget_delta = device_budget or (DEFAULT_DEVICE_EPSILON, DEFAULT_DEVICE_DELTA)

    class PersonalizeRequest(BaseModel):
        dataset: str = Field(
            pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="a folder name under the agent's --local-data"
        )
        steps: int = Field(200, gt=0, le=100_000)
        learning_rate: float = Field(0.05, gt=0, le=10)
        batch_size: int = Field(32, gt=0, le=4096)
        holdout: float = Field(0.3, gt=0, lt=1)
        clipping_norm: float | None = Field(None, gt=0)
        noise_multiplier: float = Field(0.0, ge=0)
        returns: Literal["delta", "metrics", "nothing"] = "metrics"
        epsilon: float | None = Field(None, gt=0, description="the DP job's budget; required with noise_multiplier > 0")
        delta: float = Field(DEFAULT_JOB_DELTA, gt=0, lt=1, description="the DP job's delta")

    @app.post("/v1/personalize", dependencies=[Depends(authorized)])
    def personalize_active(body: PersonalizeRequest) -> dict[str, Any]:
        """Fine-tune the active model's last layer on a local dataset; the data never leaves this device. A DP job
        (noise_multiplier > 0) names its epsilon, is priced before it runs, and is charged to the device's own
        ledger."""
        if RETURNS_ORDER.index(body.returns) > RETURNS_ORDER.index(allow_returns):
            raise HTTPException(
                status_code=403,
                detail=f"this device returns at most {allow_returns!r} from personalization; "
                f"{body.returns!r} was asked",
            )
        private = body.noise_multiplier > 0
        if private and body.epsilon is None:
            ledger = device_ledger(updater.home, budget_epsilon, budget_delta)
            raise HTTPException(
                status_code=403,
                detail=f"DP personalization (noise_multiplier {body.noise_multiplier:g}) needs an epsilon: "
                f"this device has epsilon {ledger.remaining():g} of {budget_epsilon:g} left",
            )
        folder = local_data / body.dataset
        if ".." in body.dataset or not folder.is_dir():
            raise HTTPException(status_code=404, detail=f"no local dataset {body.dataset!r} on this device")
        options = body.model_dump(exclude={"dataset", "epsilon", "delta"})
        try:
            artifact, version = updater.active_artifact()
            x, y = load_local_data(folder)
            if not private:
                return {"version": version, **personalize(artifact, x, y, **options)}
            if not body.clipping_norm:
                raise PersonalizationError("noise_multiplier > 0 needs clipping_norm")
            if body.epsilon is None:  # answered with 403 above, before the local data was read
                raise PersonalizationError("noise_multiplier > 0 needs epsilon")
            epsilon, rate = job_epsilon(
                len(x), body.steps, body.batch_size, body.holdout, body.noise_multiplier, body.delta
            )
            if epsilon > body.epsilon * (1 + 1e-9):
                raise HTTPException(
                    status_code=403,
                    detail=f"the job would spend epsilon {epsilon:.4g} (noise {body.noise_multiplier:g}, "
                    f"sample rate {rate:.4g}, {body.steps} steps, delta {body.delta:g}), more than "
                    f"the epsilon {body.epsilon:g} it asks for; nothing was run",
                )
            digest = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
            # Every job is a fresh draw: a unique nonce in its key, so it is charged every time it runs.
            computation = Computation(
                kind="device-personalization",
                dataset_digest=digest,
                hyperparameters={**options, "delta": body.delta, "model_version": version, "job": uuid.uuid4().hex},
                code=code_version("hil.personalize"),
            )
            ledger = device_ledger(updater.home, budget_epsilon, budget_delta)
            with ledger.spend(
                computation,
                f"on-device DP personalization of the head (dataset {body.dataset})",
                epsilon,
                body.delta,
                parameters={
                    "noise_multiplier": body.noise_multiplier,
                    "sample_rate": rate,
                    "steps": body.steps,
                    "clipping_norm": body.clipping_norm,
                    "requested_epsilon": body.epsilon,
                },
                note="device-local data; never leaves the device",
            ) as spend:
                result = personalize(artifact, x, y, **options)
            spent_epsilon, spent_delta = ledger.spent()
            result["device_privacy"] = {
                "epsilon": epsilon,
                "delta": body.delta,
                "ledger_entry": spend.entry.id,
                "device_spent_epsilon": spent_epsilon,
                "device_budget_epsilon": budget_epsilon,
                "device_spent_delta": spent_delta,
                "device_budget_delta": budget_delta,
            }
        except PrivacyBudgetError as err:
            raise HTTPException(status_code=403, detail=f"this device's personalization budget: {err}") from None
        except (UpdateRefused, PersonalizationError) as err:
            raise HTTPException(status_code=409 if isinstance(err, UpdateRefused) else 422, detail=str(err)) from None
        return {"version": version, **result}


def _add_delivery_routes(app: "FastAPI", updater: "Updater", authorized: Callable[..., None]) -> None:
    from fastapi import Depends, HTTPException, Request
    from pydantic import BaseModel, Field

    from edgeops.bundle import BundleError, device_public_pem
    from edgeops.hil.updater import BadRequest, UpdateRefused
    from edgeops.hil.version import AGENT_VERSION

    class RollbackRequest(BaseModel):
        reason: str = Field(min_length=1, max_length=2000)

    class InferRequest(BaseModel):
        inputs: list[list[float]] = Field(min_length=1, max_length=4096)

    @app.get("/v1/identity", dependencies=[Depends(authorized)])
    def identity() -> dict[str, Any]:
        return {
            "device_id": updater.device_id,
            "target": updater.target,
            "agent_version": AGENT_VERSION,
            "encryption_public_key": device_public_pem(updater.device_key.public_key()),
        }

    @app.get("/v1/status", dependencies=[Depends(authorized)])
    def status() -> dict[str, Any]:
        return updater.status()

    @app.post("/v1/bundles", dependencies=[Depends(authorized)])
    async def install(request: Request, allow_downgrade: bool = False) -> dict[str, Any]:
        import anyio

        blob = await request.body()
        try:  # verification and the smoke test are CPU work: keep the event loop free for inference requests
            return await anyio.to_thread.run_sync(lambda: updater.install(blob, allow_downgrade=allow_downgrade))
        except UpdateRefused as err:
            raise HTTPException(status_code=409, detail=str(err)) from None
        except BundleError as err:
            raise HTTPException(status_code=400, detail=str(err)) from None

    @app.post("/v1/rollback", dependencies=[Depends(authorized)])
    def rollback(body: RollbackRequest) -> dict[str, Any]:
        try:
            return updater.rollback(body.reason)
        except BundleError as err:
            raise HTTPException(status_code=409, detail=str(err)) from None

    @app.post("/v1/infer", dependencies=[Depends(authorized)])
    def infer(body: InferRequest) -> dict[str, Any]:
        try:
            x = np.asarray(body.inputs, dtype=np.float32)
        except ValueError:  # rows of different lengths (found by the schemathesis fuzz test)
            raise HTTPException(status_code=422, detail="inputs must be rows of equal length") from None
        try:
            outputs, version = updater.infer(x)
        except UpdateRefused as err:
            raise HTTPException(status_code=409, detail=str(err)) from None
        except BadRequest as err:
            raise HTTPException(status_code=422, detail=str(err)) from None
        except Exception as err:
            raise HTTPException(
                status_code=422, detail=f"inference failed: {type(err).__name__}: {err}"[:500]
            ) from None
        return {"version": version, "outputs": outputs.tolist()}
