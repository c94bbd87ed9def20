"""One worker's share of a distributed job: model, data shard, group, optimizer, step.

Built from the SetupJob request. Each step computes the token-sum loss and gradients over
this rank's micro-batches of the *global* batch (engine.data.BatchSampler), then the
DistributedAdamW combines them with the peers and updates the LoRA weights; so N workers
follow the same curve as one worker on the same global batch.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_map

from engine import failpoints
from engine.config import AUTO_MODE, JobSpec
from engine.train.update import resolve_precision, trainable_dtype
from engine.worker.errors import InvalidRequest, OutOfOrder
from engine.worker.job import SetupResult, StepResult

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def _state_lock(method: F) -> F:
    """The state is read by peers (FetchState, on a gRPC thread of its own) while the
    coordinator's calls change it: one at a time, so a peer never reads half an update."""

    @functools.wraps(method)
    def locked(self: TrainingJob, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return locked  # type: ignore[return-value]


def _apply_files(job: JobSpec, paths: dict[str, Path]) -> None:
    """Point the job at the files the coordinator shipped (worker-side paths)."""
    if "dataset" in paths:
        job.data.path = str(paths["dataset"])
    if "valid" in paths:
        job.data.valid_path = str(paths["valid"])
    model_files = [p for role, p in paths.items() if role.startswith("model/")]
    if model_files:
        job.model.path = str(model_files[0].parent)


class TrainingJob:
    def __init__(self, job: JobSpec, rank: int, world: int, model: Any, tokenizer: Any,
                 data: Any, sampler: Any, group: Any, optimizer: Any, base_model_id: str):  # fmt: skip
        from engine.data import collate
        from engine.train import Evaluator, GradientStep

        self.job, self.rank, self.world = job, rank, world
        self.model, self.tokenizer, self.data = model, tokenizer, data
        self.sampler, self.group, self.optimizer = sampler, group, optimizer
        self.base_model_id = base_model_id
        self.collate = collate
        self.pad_id = data.pad_id
        self.grad_step = GradientStep(model)
        self.evaluator = Evaluator(model)
        self.steps_done = 0
        self._lock = threading.RLock()  # see _state_lock
        # fp16: every rank keeps the same DynamicLossScale; all see the same global gradient
        # norm, so they skip (and back off) on the same steps and never drift apart
        self.precision = resolve_precision(model, job.run.precision)  # "auto" -> the base's
        self.loss_scale = fp16_loss_scale() if self.precision == "fp16" else None
        model.train()

    @classmethod
    def build(cls, job_toml: str, rank: int, world: int, peers: list[str], paths: dict[str, Path],
              mailbox: Any, group_token: str, mlx_hostfile: str = "", job_dir: Path | None = None,
              peer_certs: list[str] | None = None) -> TrainingJob:  # fmt: skip
        job = JobSpec.from_toml(
            job_toml, source="SetupJob.job_toml"
        )  # bad settings fail first, fast
        if job.dist.mode == AUTO_MODE:  # coordinators resolve it; a direct caller gets the
            log.warning("dist.mode 'auto' reached a worker unresolved: using all-reduce")
            job.dist.mode = "all-reduce"  # same mode on every rank: they all read this job

        from engine.data import BatchSampler, prepare_data
        from engine.dist.dist_optimizer import DistributedAdamW
        from engine.dist.factory import make_group
        from engine.lora.apply import apply_lora
        from engine.model.grad_checkpoint import enable_grad_checkpoint
        from engine.model.load import load_model
        from engine.train import cast_for_compute
        from engine.train.step import packing_for

        base_model_id = job.model.path
        _apply_files(job, paths)
        t0 = time.perf_counter()
        loaded = load_model(job.model)
        model = loaded.model
        apply_lora(model, job.lora, seed=job.run.seed)
        if job.run.grad_checkpoint:
            enable_grad_checkpoint(model)
        packing = packing_for(model, job.data.packing)  # only where records stay apart
        data = prepare_data(job.data, loaded.tokenizer, seed=job.run.seed, packing=packing)
        sampler = BatchSampler(data.train.lengths(), job.run.batch_size, seed=job.run.seed)
        if job.dist.mode == "mlx" and world > 1:
            _set_mlx_env(mlx_hostfile, rank, job_dir or Path("."))
        group = make_group(
            job.dist.mode, rank, peers or ["self"], group_token, mailbox,
            compression=job.dist.compression, timeout_s=job.dist.step_timeout_s,
            peer_certs=peer_certs or (),
        )  # fmt: skip
        if group.size != world:
            raise InvalidRequest(
                f"the {job.dist.mode} group has {group.size} ranks, expected {world}"
            )
        d = job.dist
        # fp32 masters live in the optimizer (one flat vector on the device); the model's
        # trainable weights are views of it, or bf16/fp16 copies when run.precision casts
        optimizer = DistributedAdamW(
            group, d.mode, job.optim, model.trainable_parameters(), d.compression, d.bucket_mb
        )
        precision = cast_for_compute(model, job.run.precision)
        _set_trainable(model, optimizer.layout.unflatten(optimizer.params), precision)
        mx.eval(model.parameters())
        log.info(
            "rank %d/%d ready in %.1fs (%s)", rank, world, time.perf_counter() - t0, job.dist.mode
        )
        out = cls(
            job,
            rank,
            world,
            model,
            loaded.tokenizer,
            data,
            sampler,
            group,
            optimizer,
            base_model_id,
        )
        out.mailbox = mailbox  # a regroup makes its new group over the same mailbox
        return out

    # ---- regroup -----------------------------------------------------------------------------
    @_state_lock
    def regroup(self, rank: int, world: int, peers: list[str], group_token: str,
                peer_certs: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
        """Go on as ``rank`` of ``world`` (a peer was lost): a new gRPC group over the same
        mailbox; the model, data and optimizer state stay (nothing is loaded again). The
        state is that of the last completed step: a step that failed mid-collective put it
        back (DistributedAdamW.step)."""
        from engine.dist.factory import make_group

        d = self.job.dist
        if d.mode == "mlx":
            raise OutOfOrder("Regroup: MLX's own group cannot re-form in its process; "
                             "set the job up again")  # fmt: skip
        t0 = time.perf_counter()
        group = make_group(
            d.mode, rank, peers or ["self"], group_token, getattr(self, "mailbox", None),
            compression=d.compression, timeout_s=d.step_timeout_s, peer_certs=peer_certs or (),
        )  # fmt: skip
        try:
            self.optimizer.regroup(group)
        except ValueError as e:
            group.close()
            raise OutOfOrder(f"Regroup: {e}") from None
        self.group, self.rank, self.world = group, rank, world
        took = time.perf_counter() - t0
        log.info("regrouped as rank %d/%d in %.3fs at step %d, the model kept (no reload)",
                 rank, world, took, self.steps_done)  # fmt: skip
        return {"step": self.steps_done, "regroup_s": took}

    # ---- plain calls -----------------------------------------------------------------------
    def describe(self) -> SetupResult:
        n = sum(v.size for _, v in tree_flatten(self.model.trainable_parameters()))
        msg = f"rank {self.rank}/{self.world}: {len(self.data.train)} train items, {n} trainable parameters"
        return SetupResult(train_items=len(self.data.train), trainable_params=int(n), message=msg)

    @_state_lock
    def step(
        self, step: int, lr: float, shares: list[int] | None = None, micro_batches: int = 0
    ) -> StepResult:
        t0 = time.perf_counter()
        scale = self.loss_scale.scale if self.loss_scale is not None else 1.0
        # dropout keys are a pure function of (seed, rank, step): a resume needs no RNG state
        mx.random.seed((self.job.run.seed * 1_000_003 + step * 4_099 + self.rank) % 2**32)
        # this rank's share of the global batch (the coordinator's split; raises ValueError
        # naming ``shares`` when it does not fit the batch), in its own number of micro-batches
        accum = micro_batches or self.job.run.grad_accum
        parts = self.sampler.micro_batches(step, self.rank, self.world, accum, shares)
        work = 0
        if parts:
            batches = [
                self.collate([self.data.train[i] for i in idx], self.pad_id) for idx in parts
            ]
            work = sum(int(b.inputs.size) for b in batches)
            loss_sum, ntok, grads = self.grad_step(batches, scale)
        else:  # no share this step (more ranks than sequences, or left out): still take part
            loss_sum, ntok = mx.array(0.0), mx.array(0.0)
            grads = tree_map(
                lambda p: mx.zeros(p.shape, mx.float32), self.model.trainable_parameters()
            )
        # lazy until here: the optimizer evaluates the gradients bucket by bucket and sends
        # each while the next is computed (one eval in all with one worker)
        new_params, stats = self.optimizer.step(grads, loss_sum, ntok, lr, grad_scale=scale)
        failpoints.reached("exit-after-update", self.rank, self.world, step)
        # what the balancer evens out: the data's own cost, before any wait on a collective
        grad_s = (stats.grads_done_at or time.perf_counter()) - t0
        if self.loss_scale is not None:
            self.loss_scale.update(bool(np.isfinite(stats.grad_norm)))
        _set_trainable(self.model, new_params, self.precision)
        local_loss, local_tokens = float(loss_sum.item()), int(ntok.item())
        t2 = time.perf_counter()
        self.steps_done = step + 1
        return StepResult(
            step=step, loss_sum=local_loss, tokens=local_tokens, grad_norm=float(stats.grad_norm),
            compute_s=(t2 - t0) - stats.comm_exposed_s, comm_s=stats.comm_s,
            peak_memory_bytes=float(mx.get_peak_memory()), skipped=bool(stats.skipped), loss_scale=scale,
            work_tokens=work, grad_s=grad_s, comm_hidden_s=stats.comm_hidden_s,
            group_loss_sum=float(stats.loss_sum), group_tokens=int(stats.n_tokens),
        )  # fmt: skip

    def evaluate(self, max_batches: int) -> tuple[float, int]:
        from engine.train import validation_sums

        if not self.data.valid:
            return 0.0, 0
        self.model.eval()
        try:
            total, ntok = validation_sums(self.evaluator, self.data.valid, self.job.run.batch_size, max_batches,
                                          self.collate, self.pad_id, self.rank, self.world)  # fmt: skip
        finally:
            self.model.train()
        return float(total), int(ntok)

    @_state_lock
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """This rank's resumable state: parameters and its optimizer (shard), fp32 numpy."""
        state = self.optimizer.state_dict()
        tensors = {k: np.asarray(v) for k, v in state.items() if isinstance(v, np.ndarray)}
        meta = {k: v for k, v in state.items() if k not in tensors}
        meta = {
            **meta,
            "rank": self.rank,
            "world": self.world,
            "mode": self.job.dist.mode,
            "step": self.steps_done,
            "loss_scale": self.loss_scale.state_dict() if self.loss_scale is not None else None,
        }
        return meta, tensors

    @_state_lock
    def state_meta(self) -> dict[str, Any]:
        """Where this rank's state lies, without its tensors: ``rank``, ``world``, ``mode``,
        ``n`` parameters, the moments ``[lo, hi)`` it holds, ``step`` (and ZeRO-1's
        ``prev_lo``/``prev_hi`` after a regroup). What PullState plans with."""
        o = self.optimizer
        meta = {"rank": self.rank, "world": self.world, "mode": self.job.dist.mode,
                "n": o.layout.total, "lo": o.lo, "hi": o.hi, "step": self.steps_done}  # fmt: skip
        if o.previous is not None:
            meta.update(prev_lo=o.previous["lo"], prev_hi=o.previous["hi"])
        return meta

    @_state_lock
    def serve_state(self, step: int, params: bool, lo: int, hi: int) -> tuple[dict, dict]:
        """A part of this rank's state of ``step`` for a peer (Collective.FetchState, or
        its own PullState): the counters, the parameters if ``params``, the moments ``[lo,
        hi)`` (DistributedAdamW.state_part)."""
        if step != self.steps_done:
            raise OutOfOrder(f"this worker's state is of step {self.steps_done}, not {step}")
        try:
            part = self.optimizer.state_part(params, lo, hi)
        except ValueError as e:
            raise InvalidRequest(str(e)) from None
        tensors = {k: v for k, v in part.items() if isinstance(v, np.ndarray)}
        meta = {"steps": part["steps"], "adam_step": part["adam_step"], "step": step,
                "lo": lo, "hi": hi,
                "loss_scale": None if self.loss_scale is None else self.loss_scale.state_dict()}  # fmt: skip
        return meta, tensors

    def take_state(self, meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> int:
        """The state pulled from peers (PullState). As put_state, except that ZeRO-1's
        shard from before the regroup stays until the next step: peers re-cutting their
        own shards may still read it."""
        step = self.put_state(meta, tensors, keep_previous=True)
        log.info("state of step %d pulled from peers (moments [%d, %d))", step, meta["lo"],
                 meta["hi"])  # fmt: skip
        return step

    @_state_lock
    def put_state(
        self, meta: dict[str, Any], tensors: dict[str, np.ndarray], keep_previous: bool = False
    ) -> int:
        if meta.get("world") != self.world or meta.get("mode") != self.job.dist.mode:
            raise OutOfOrder(
                f"PutState: state is from {meta.get('world')} workers in mode {meta.get('mode')!r}, "
                f"this job has {self.world} in {self.job.dist.mode!r}"
            )
        try:
            self.optimizer.load_state_dict({**meta, **tensors}, keep_previous)
        except (KeyError, ValueError) as e:
            raise InvalidRequest(f"PutState: {e}") from None
        params = self.optimizer.layout.unflatten(self.optimizer.params)
        _set_trainable(self.model, params, self.precision)
        # MLX streams are per thread and the next Step may run on another gRPC thread:
        # leave no lazy graph behind (same at the end of build)
        mx.eval(self.model.parameters())
        if self.loss_scale is not None and meta.get("loss_scale"):
            self.loss_scale.load_state_dict(meta["loss_scale"])
        self.steps_done = int(meta.get("step", 0))
        if not keep_previous:
            log.info("state of step %d put by the coordinator", self.steps_done)
        return self.steps_done

    def adapter_files(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The adapter folder (mlx-lm format) as uint8 tensors named by file (rank 0 calls)."""
        import tempfile

        from engine.lora.adapters import save_adapter

        with tempfile.TemporaryDirectory() as tmp:
            save_adapter(self.model, tmp, self.job, self.base_model_id)
            files = {
                p.name: np.frombuffer(p.read_bytes(), dtype=np.uint8)
                for p in Path(tmp).iterdir()
                if p.is_file()
            }
        return {"files": sorted(files), "step": self.steps_done}, files

    def close(self) -> None:
        try:
            self.optimizer.close()
            self.group.close()
        except Exception:  # noqa: BLE001 - closing must never mask the reason we stop
            log.exception("closing the group failed")


def _set_trainable(model: Any, params: Any, precision: str) -> None:
    """The model's trainable weights from the optimizer's fp32 masters: the views themselves
    (no copy) unless run.precision casts them to bf16/fp16."""
    dtype = trainable_dtype(precision)
    model.update(params if dtype == mx.float32 else tree_map(lambda p: p.astype(dtype), params))
    # evaluated here (views cost no copy): the next call may come on another gRPC thread,
    # and MLX's streams are per thread, so no lazy graph is left behind
    mx.eval(model.trainable_parameters())


def fp16_loss_scale() -> Any:
    """The distributed path's loss scale: the same start as engine.train's Updater."""
    from engine.optim import DynamicLossScale

    return DynamicLossScale()


def _set_mlx_env(hostfile_json: str, rank: int, job_dir: Path) -> None:
    """Write the coordinator's MLX ring hostfile and set MLX_HOSTFILE/MLX_RANK for init."""
    from engine.dist.mlx_env import ring_env

    if not hostfile_json:
        raise InvalidRequest("mlx_hostfile: required for dist.mode 'mlx' with more than one worker")
    try:
        json.loads(hostfile_json)
    except ValueError as e:
        raise InvalidRequest(f"mlx_hostfile: not valid JSON ({e})") from None
    job_dir.mkdir(parents=True, exist_ok=True)
    path = job_dir / f"mlx_hostfile_rank{rank}.json"
    path.write_text(hostfile_json, encoding="utf-8")
    os.environ.update(ring_env(path, rank))
