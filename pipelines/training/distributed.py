"""The final training under ``torchrun``: DistributedDataParallel on the gloo backend (CPU).

    torchrun --standalone --nproc_per_node=2 -m pipelines.training.distributed \\
        --workdir var/training/<run_id>

trains the same ensemble as ``train.train_final`` from a run's work folder (the dataset the
dataset step saved and the configurations the search chose in ``tuning.json``). Every member is
trained by all ranks together: each rank takes its share of every epoch from a
``DistributedSampler`` and ``batch_size / world_size`` rows per step, and DDP averages the
gradients, so one optimiser step sees ``batch_size`` rows and an epoch has the steps of the
single-process run. The sampler draws the epoch's order exactly as ``model.train_network``
does (same seed, same generator), so global batch k on N ranks holds the rows of the
single-process batch k: initial weights, row order and batches match the one-process model;
only dropout masks (one stream per rank) and floating-point summation order differ. Only rank
0 writes: the model (``<workdir>/distributed/model.pt``) and a report (``report.json``: world
size, rows each rank trained on, per-epoch losses, seconds). ``train_final(processes=N)``
launches this and logs the result to MLflow from its own process.

On one machine it spreads the work over processes (one thread each); on several machines the
same module runs with ``torchrun --nnodes ... --rdzv-endpoint ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, TensorDataset

from pipelines.training import dataset, ensemble, steps
from pipelines.training.model import (
    EpochRecord,
    FraudScorer,
    TrainedNetwork,
    build_mlp,
    configure_threads,
    weighted_loss,
)

log = logging.getLogger(__name__)

OUTPUT_DIR = "distributed"
MODEL_FILE = "model.pt"
REPORT_FILE = "report.json"
LOG_FILE = "torchrun.log"


@dataclass
class DistributedOutcome:
    """What rank 0 left in the output folder, read back by the launching process."""

    scorer: Any  # model.FraudScorer
    histories: dict[str, list[Any]]  # MLflow metric prefix -> EpochRecords
    world_size: int
    rows_per_rank: list[int]
    seconds: float  # training time inside the ranks (launch and imports excluded)
    wall_seconds: float  # the whole torchrun call


def _same_order_sampler(dataset: Any, world: int, rank: int, seed: int) -> Any:

    class SameOrderSampler(DistributedSampler):
        """A DistributedSampler whose epoch order is ``train_network``'s: one generator seeded
        once, one ``randperm`` per epoch (so iterate it exactly once per epoch). Rank r takes
        positions r, r + N, ...: its i-th block of ``batch / N`` rows and the other ranks'
        make up the single-process batch i."""

        def __init__(self) -> None:
            super().__init__(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
            self.generator = torch.Generator().manual_seed(seed)

        def __iter__(self):  # type: ignore[override]
            order = torch.randperm(len(self.dataset), generator=self.generator).tolist()
            order += order[: self.total_size - len(order)]  # pad to equal shares, as the base
            return iter(order[self.rank : self.total_size : self.num_replicas])

    return SameOrderSampler()


def train_network_ddp(
    x_train: Any, y_train: Any, hp: Any, *, seed: int, max_epochs: int
) -> tuple[Any, int]:
    """``model.train_network`` without validation (the final model: exactly ``max_epochs``
    epochs), across the ranks of the default process group. Returns the ``TrainedNetwork``
    (its history: the loss averaged over all ranks' rows) and the rows this rank trained on."""

    rank, world = dist.get_rank(), dist.get_world_size()
    x = torch.as_tensor(x_train, dtype=torch.float32)
    y = torch.as_tensor(np.asarray(y_train), dtype=torch.float32)
    network = build_mlp(x.shape[1], hp, seed)  # same initial weights on every rank
    ddp = DistributedDataParallel(network)
    # Dropout masks: each rank sees other rows, so give it its own stream.
    torch.manual_seed(seed * 7919 + rank)
    optimiser = torch.optim.Adam(
        ddp.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay
    )
    sampler = _same_order_sampler(TensorDataset(x, y), world, rank, seed)
    # Global batch = the single-process batch: same steps per epoch, same gradient scale.
    local_batch = max(1, hp.batch_size // world)
    result = TrainedNetwork(network=network)
    rows = 0
    for epoch in range(1, max_epochs + 1):
        started = time.perf_counter()
        ddp.train()
        order = torch.as_tensor(list(sampler))
        total = 0.0
        for i in range(0, len(order), local_batch):
            idx = order[i : i + local_batch]
            optimiser.zero_grad()
            loss = weighted_loss(ddp(x[idx]).squeeze(-1), y[idx], hp)
            loss.backward()  # DDP all-reduces (averages) the gradients here
            optimiser.step()
            total += loss.item() * len(idx)
        rows += len(order)
        sums = torch.tensor([total, float(len(order))], dtype=torch.float64)
        dist.all_reduce(sums)
        seconds = time.perf_counter() - started
        result.history.append(EpochRecord(epoch, float(sums[0] / sums[1]), None, seconds))
    result.best_epoch = max_epochs
    # A plain module again (no DDP state), weights identical on every rank.
    clean = build_mlp(x.shape[1], hp, seed)
    clean.load_state_dict(network.state_dict())
    clean.eval()
    result.network = clean
    return result, rows


def run(workdir: Path, *, seeds_per_trial: int | None = None, threads: int = 1) -> int:
    """The body of one rank (``torchrun`` sets RANK, WORLD_SIZE, MASTER_ADDR/PORT)."""

    configure_threads(threads)
    dist.init_process_group(backend="gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        data = dataset.load(workdir / "data")
        tuning = steps.read(workdir, steps.Tuning)
        seeds = seeds_per_trial if seeds_per_trial is not None else ensemble.SEEDS_PER_TRIAL
        rows: list[int] = []

        def fit(x: Any, labels: Any, hp: Any, seed: int, epochs: int) -> Any:
            trained, count = train_network_ddp(x, labels, hp, seed=seed, max_epochs=epochs)
            rows.append(count)
            return trained

        started = time.monotonic()
        members, histories = ensemble.train_ensemble(data, tuning["members"], fit, seeds)
        seconds = time.monotonic() - started
        # Every rank's row count, to show that all of them took part.
        counts = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
        dist.all_gather(counts, torch.tensor([sum(rows)], dtype=torch.int64))
        if rank == 0:
            out = workdir / OUTPUT_DIR
            out.mkdir(parents=True, exist_ok=True)
            scorer = FraudScorer(data.inputs, members, ensemble.ensemble_threshold(tuning)).eval()
            torch.save(scorer, out / MODEL_FILE)
            report = {
                "world_size": world,
                "backend": dist.get_backend(),
                "rows_per_rank": [int(c.item()) for c in counts],
                "members": len(members),
                "seconds": seconds,
                "threads_per_rank": torch.get_num_threads(),
                "histories": {k: [asdict(r) for r in v] for k, v in histories.items()},
            }
            (out / REPORT_FILE).write_text(json.dumps(report, indent=2))
            log.info("rank 0 of %d: %d members in %.1fs -> %s", world, len(members), seconds, out)
        dist.barrier()  # rank 0's files exist before any rank reports success
    finally:
        dist.destroy_process_group()
    return 0


def launch(
    workdir: Path,
    processes: int,
    *,
    threads: int = 1,
    seeds_per_trial: int | None = None,
    timeout_seconds: float = 3600,
) -> DistributedOutcome:
    """Run this module under ``torchrun --standalone`` with ``processes`` local ranks (the
    final-training step's ``processes`` option) and read back what rank 0 wrote."""

    workdir = Path(workdir)
    out = workdir / OUTPUT_DIR
    out.mkdir(parents=True, exist_ok=True)
    for stale in (MODEL_FILE, REPORT_FILE):  # a retried step must not read an old result
        (out / stale).unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--standalone", f"--nproc-per-node={processes}",
        "-m", "pipelines.training.distributed",
        "--workdir", str(workdir),
        "--threads", str(threads),
    ]  # fmt: skip
    if seeds_per_trial is not None:
        command += ["--seeds-per-trial", str(seeds_per_trial)]
    # torchrun would set OMP_NUM_THREADS=1 itself, with a warning; say it explicitly.
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.monotonic()
    with (out / LOG_FILE).open("w") as log_file:
        done = subprocess.run(
            command, env=env, stdout=log_file, stderr=subprocess.STDOUT, timeout=timeout_seconds
        )
    wall = time.monotonic() - started
    if done.returncode != 0 or not (out / REPORT_FILE).exists():
        tail = "\n".join((out / LOG_FILE).read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"torchrun exited {done.returncode}:\n{tail}")
    report = json.loads((out / REPORT_FILE).read_text())
    scorer = torch.load(out / MODEL_FILE, weights_only=False)  # our own file, written above
    histories = {
        prefix: [EpochRecord(**r) for r in records]
        for prefix, records in report["histories"].items()
    }
    return DistributedOutcome(
        scorer=scorer,
        histories=histories,
        world_size=int(report["world_size"]),
        rows_per_rank=list(report["rows_per_rank"]),
        seconds=float(report["seconds"]),
        wall_seconds=wall,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="torchrun ... -m pipelines.training.distributed", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--workdir", type=Path, required=True, help="The training run's folder.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank.")
    parser.add_argument("--seeds-per-trial", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return run(args.workdir, seeds_per_trial=args.seeds_per_trial, threads=args.threads)


if __name__ == "__main__":
    sys.exit(main())
