"""The `latprof sweep` flags that split one sweep over shards, worker processes or Ray tasks."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from latprof.errors import InputError

ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        help="Measure only shard I of N (0-based, e.g. 0/4): a partition of the grid balanced "
        "by predicted cost, the same on every machine.",
    ),
]
GpusOpt = Annotated[
    str | None,
    typer.Option("--gpus", help="One worker per GPU, each a shard: 0,1,2,3 or all."),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option("--workers", help="CPU: N workers, each pinned to its own cores, one shard each."),
]
RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        help="One Ray task per shard: local (a Ray instance of this machine), auto (the "
        "running cluster) or a cluster ADDRESS.",
    ),
]
ShardsOpt = Annotated[
    int | None,
    typer.Option(
        "--shards",
        help="With --ray: number of shards (default: the cluster's GPUs; CPUs / --threads on cpu).",
    ),
]
ProgressFileOpt = Annotated[
    Path | None, typer.Option("--progress-file", hidden=True, help="Worker progress (internal).")
]

#: parameters a worker's command line does not inherit from the parent's
_NOT_INHERITED = {"gpus", "workers", "ray", "shards", "progress_file", "as_json", "shard"}
_NOT_INHERITED_BY_WORKERS = _NOT_INHERITED | {"device", "threads"}


@dataclass
class Fleet:
    shard: str | None = None
    gpus: str | None = None
    workers: int | None = None
    ray: str | None = None
    shards: int | None = None
    progress_file: Path | None = None
    ctx: typer.Context | None = None  # the parsed command line, for workers' and re-run commands

    def check(self) -> None:
        chosen = [
            f
            for f, v in (
                ("--shard", self.shard),
                ("--gpus", self.gpus),
                ("--workers", self.workers),
                ("--ray", self.ray),
            )
            if v is not None
        ]
        if len(chosen) > 1:
            raise InputError(
                f"{' and '.join(chosen)} cannot be combined: --shard sweeps one shard here, "
                "--gpus / --workers split the grid over this machine, --ray over a Ray cluster"
            )
        if self.shards is not None and self.ray is None:
            raise InputError("--shards is for --ray; --gpus and --workers make one shard each")
        if self.shards is not None and self.shards < 1:
            raise InputError(f"--shards must be at least 1, got {self.shards}")
        if self.workers is not None and self.workers < 1:
            raise InputError(f"--workers must be at least 1, got {self.workers}")


def command_args(ctx: typer.Context, drop: set[str]) -> list[str]:
    """The command's options (as parsed), without those in `drop`: what a worker or a re-run
    needs to sweep the same grid."""
    args: list[str] = []
    for param in ctx.command.params:
        if param.name in drop or getattr(param, "param_type_name", "") != "option":
            continue
        value = ctx.params.get(param.name)
        if value is None or value is False or value == () or value == []:
            continue
        flag = param.opts[0]
        if value is True:
            args.append(flag)
            continue
        for item in value if isinstance(value, list | tuple) else [value]:
            args += [flag, str(getattr(item, "value", item))]
    return args


def run_fleet(request, out: Path, fleet: Fleet, *, threads, config, points, as_json) -> bool:
    """Run --gpus / --workers / --ray; False when none was asked for (a plain sweep)."""
    from latprof.cli.common import print_json
    from latprof.report import console, err_console, progress_bar

    if fleet.gpus is None and fleet.workers is None and fleet.ray is None:
        return False
    device = request.settings.device
    if fleet.ray is not None:
        result = _ray(fleet, out, points=points, threads=threads, config=config, as_json=as_json)
    else:
        from latprof import workers as w

        base = command_args(fleet.ctx, _NOT_INHERITED_BY_WORKERS)
        if fleet.gpus is not None:
            import torch

            gpus = w.parse_gpus(fleet.gpus, torch.cuda.device_count())
            if device != "cuda":
                raise InputError(
                    "--gpus measures on the GPUs: drop --device cpu (or use --workers)"
                )
            plan = w.gpu_workers(gpus, base)
        else:
            if device != "cpu":
                raise InputError("--workers is for the CPU (--device cpu); on GPUs use --gpus")
            plan = w.cpu_workers(fleet.workers, base, threads)
        with progress_bar(enabled=not as_json) as on_progress:
            result = w.totals(w.run_workers(plan, on_progress))
    if as_json:
        print_json(result)
    else:
        console.print(
            f"{out}: {result['measured']} rows measured, {result['skipped_existing']} already "
            f"there, {result['errors']} errors, {result['oom']} out of memory"
        )
    for failure in result["failed"]:
        err_console.print(f"[red]failed:[/] {failure}", highlight=False)
    if result["failed"]:
        raise typer.Exit(1)
    return True


def _ray(fleet: Fleet, out: Path, *, points, threads, config, as_json) -> dict[str, Any]:
    from latprof import ray_sweep
    from latprof import shard as sh
    from latprof.lut import row_key
    from latprof.report import progress_bar
    from latprof.sweep import existing_keys

    ray = ray_sweep.import_ray()
    device = points[0][1].device
    init: dict[str, Any] = {"include_dashboard": False}
    address: str | None = fleet.ray
    if fleet.ray == "local":
        address = None
        init["num_cpus"] = len(os.sched_getaffinity(0))
    if not ray.is_initialized():
        ray.init(address=address, **init)
    count = fleet.shards or _cluster_slots(ray, device, threads)
    base = command_args(fleet.ctx, _NOT_INHERITED)
    done = existing_keys(out)
    plan = []
    for shard_points, index in zip(sh.partition(points, count), range(count), strict=True):
        shard = sh.Shard(index, count)
        todo = [p for p in shard_points if row_key(p[0].key, p[1]) not in done]
        info = {"shard": sh.provenance(points, shard), "ray_address": fleet.ray}
        plan.append((shard, todo, info))

    def rerun(shard) -> str:
        return shlex.join(["latprof", "sweep", *base, "--shard", str(shard)])

    command = shlex.join(["latprof", "sweep", *base, "--ray", fleet.ray])
    with progress_bar(enabled=not as_json) as on_progress:
        summary = ray_sweep.run_on_ray(
            plan,
            out,
            address=address,
            threads=threads,
            config=config,
            command=command,
            rerun=rerun,
            on_progress=on_progress,
        )
    return summary.as_dict()


def _cluster_slots(ray, device: str, threads: int | None) -> int:
    resources = ray.cluster_resources()
    if device == "cuda":
        slots = int(resources.get("GPU", 0))
        if not slots:
            raise InputError("--ray with --device cuda: the Ray cluster has no GPUs")
        return slots
    return max(1, int(resources.get("CPU", 1)) // (threads or 1))
