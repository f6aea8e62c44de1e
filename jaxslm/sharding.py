"""Device meshes, the one table that maps logical axis names onto mesh axes, and host arrays
put on a mesh by those names.

Parameters and activations are annotated with logical names (`embed`, `heads`, ...);
nothing outside this module names a mesh axis.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxslm.errors import JaxslmError

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_RULES: dict[str, tuple[str, ...]] = {
    "batch": ("data", "fsdp"),
    "length": (),
    "embed": ("fsdp",),
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "head_dim": (),
    "mlp": ("tensor",),
    "vocab": ("tensor",),
    "layers": (),
}

LogicalAxes = Sequence[str | None]
# Token-shaped arrays [batch, length]: rows over the data and fsdp axes, the sequence whole.
BATCH_AXES = ("batch", "length")


def make_mesh(
    data: int = 1, fsdp: int = 1, tensor: int = 1, devices: Sequence[jax.Device] | None = None
) -> Mesh:
    """A data x fsdp x tensor mesh; one size may be -1 to take the remaining devices."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise JaxslmError(
            f"mesh data={data} fsdp={fsdp} tensor={tensor}: use positive sizes and at most one -1"
        )
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise JaxslmError(
                f"mesh data={data} fsdp={fsdp} tensor={tensor}: the fixed sizes (product "
                f"{known}) do not divide the {len(devices)} devices; choose sizes whose product "
                f"divides {len(devices)}"
            )
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise JaxslmError(
            f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} needs "
            f"{math.prod(sizes)} devices but {len(devices)} are present; set one size to -1 to fill"
        )
    # topology-aware on TPUs (neighbouring chips share an axis), the listed order elsewhere
    grid = mesh_utils.create_device_mesh(sizes, devices, allow_split_physical_axes=True)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_spec(
    axes: LogicalAxes, shape: Sequence[int] | None = None, mesh: Mesh | None = None
) -> PartitionSpec:
    """PartitionSpec for logical `axes`; with shape and mesh, axes that do not divide stay whole."""
    parts = []
    used: set[str] = set()
    for index, name in enumerate(axes):
        mesh_axes = tuple(a for a in LOGICAL_RULES[name] if a not in used) if name else ()
        if mesh is not None:
            mesh_axes = tuple(a for a in mesh_axes if mesh.shape[a] > 1)
            if shape is not None and shape[index] % math.prod(mesh.shape[a] for a in mesh_axes):
                mesh_axes = ()
        used.update(mesh_axes)
        parts.append(mesh_axes[0] if len(mesh_axes) == 1 else (mesh_axes or None))
    return PartitionSpec(*parts)


def named_sharding(mesh: Mesh, axes: LogicalAxes, shape: Sequence[int]) -> NamedSharding:
    """The NamedSharding of an array of `shape` with logical `axes` on `mesh`."""
    return NamedSharding(mesh, logical_spec(axes, shape, mesh))


def tree_shardings(mesh: Mesh, axes_tree, shapes_tree):
    """NamedShardings for a tree of logical axes (tuples) and a matching tree of shapes."""
    return jax.tree.map(
        lambda axes, shape: named_sharding(mesh, axes, shape),
        axes_tree,
        shapes_tree,
        is_leaf=lambda node: isinstance(node, tuple),
    )


def batch_shards(mesh: Mesh | jax.sharding.AbstractMesh | None = None) -> int:
    """Into how many parts the logical `batch` axis splits on `mesh` (default: the active
    mesh; 1 without one)."""
    mesh = jax.sharding.get_abstract_mesh() if mesh is None else mesh
    if mesh.empty:
        return 1
    return math.prod(mesh.shape[a] for a in LOGICAL_RULES["batch"] if a in mesh.shape)


def constrain(x: jax.Array, axes: LogicalAxes) -> jax.Array:
    """Sharding constraint by logical axes; a no-op when no mesh is active."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_spec(axes, x.shape, mesh))


def mesh_context(mesh: Mesh | None) -> contextlib.AbstractContextManager:
    """`jax.set_mesh(mesh)`, or a context that does nothing without a mesh."""
    return contextlib.nullcontext() if mesh is None else jax.set_mesh(mesh)


def place(array: np.ndarray, axes: LogicalAxes | None, mesh: Mesh | None) -> np.ndarray | jax.Array:
    """A host array that every process holds whole, sharded on `mesh` by its logical `axes`
    (None: replicated); without a mesh the array is returned as it is."""
    if mesh is None:
        return array
    axes = (None,) * array.ndim if axes is None else axes
    sharding = named_sharding(mesh, axes, array.shape)
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def replicate(tree, mesh: Mesh | None):
    """Every host array of the pytree `tree` whole on each device of `mesh` (as it is without
    a mesh)."""
    return jax.tree.map(lambda array: place(array, None, mesh), tree)


def place_local(rows: np.ndarray, axes: LogicalAxes, mesh: Mesh, global_rows: int) -> jax.Array:
    """This process's `rows` of a global array of `global_rows` rows, sharded on `mesh` by its
    logical `axes` (each process passes its own rows, in process order)."""
    shape = (global_rows, *rows.shape[1:])
    return jax.make_array_from_process_local_data(named_sharding(mesh, axes, shape), rows, shape)


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that is >= n."""
    return -(-n // multiple) * multiple


def power_of_two_at_least(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1): padded shapes that compile once."""
    return 1 << (max(n, 1) - 1).bit_length()
