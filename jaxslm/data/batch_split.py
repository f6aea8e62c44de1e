"""How a step's rows split: into accumulated micro-batches, over the mesh's batch shards
(data x fsdp) and over processes. One rule for the config, the trainer and the pipeline."""

from __future__ import annotations

from jaxslm.errors import JaxslmError
from jaxslm.value_checks import require


def check_batch_split(
    batch_size: int,
    micro_batches: int = 1,
    shards: int = 1,
    processes: int = 1,
    samples_per_step: int | None = None,
    prefix: str = "data.",
) -> None:
    """Refuse a step of `batch_size` rows that does not split into `micro_batches` equal parts
    whose rows split over `shards` devices (mesh data x fsdp); `samples_per_step` samples that
    do not fit the rows (a sample may need a row of its own); and rows or samples that do not
    split over `processes`. Messages name the keys `prefix + name` (the config's data section,
    or "" for the pipeline's config)."""
    batch, micro, samples = (
        f"{prefix}batch_size",
        f"{prefix}micro_batches",
        f"{prefix}samples_per_step",
    )
    require(
        batch_size % micro_batches == 0,
        batch,
        batch_size,
        f"must be a multiple of {micro}={micro_batches}: change either",
    )
    rows = batch_size // micro_batches
    if rows % shards:
        raise JaxslmError(
            f"{batch}={batch_size} / {micro}={micro_batches} = {rows} rows per micro-batch do "
            f"not split over mesh data x fsdp = {shards} devices: make {batch} a multiple of "
            f"{shards * micro_batches}"
        )
    require(
        samples_per_step is None or samples_per_step <= batch_size,
        samples,
        samples_per_step,
        f"exceeds {batch}={batch_size} rows; a sample may need a row of its own: raise {batch} "
        f"to at least {samples_per_step}",
    )
    for key, count in ((batch, batch_size), (samples, samples_per_step)):
        require(
            count is None or count % processes == 0,
            key,
            count,
            f"does not split over {processes} processes: make it a multiple of {processes}",
        )


def check_process_shards(data: int, fsdp: int, processes: int) -> None:
    """Refuse a mesh whose batch shards (mesh data x fsdp) do not split over `processes` that
    each feed only their own rows of a batch (data.shard_by=records): a process must hold
    whole shards of the batch, and only its own."""
    shards = data * fsdp
    if shards % processes:
        raise JaxslmError(
            f"mesh data={data} x fsdp={fsdp} = {shards} batch shards do not split over the "
            f"{processes} processes, which each feed their own rows with data.shard_by=records: "
            f"make mesh.data x mesh.fsdp a multiple of {processes}, or set data.shard_by=rows "
            "(every process reads every row)"
        )
