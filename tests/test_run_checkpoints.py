"""Run checkpoints keep the latest N plus the best held-out loss, and give back the train state
and the data-iterator state they were handed. A damaged newest checkpoint is set aside; one that
does not fit the model, or an error that is not damage, stops the restore and moves nothing."""

import errno
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxslm.training.step_checkpoints import RunCheckpoints


@pytest.mark.parametrize("per_process_data", [False, True])
def test_keeps_latest_and_best_and_restores(tmp_path, per_process_data):
    checkpoints = RunCheckpoints(
        tmp_path, keep=2, keep_best=True, async_save=True, per_process_data=per_process_data
    )
    eval_losses = {1: 3.0, 2: 1.0, 3: 2.0, 4: 4.0, 5: 5.0}
    for step, loss in eval_losses.items():
        state = {"params": {"w": jnp.full(3, float(step))}, "step": jnp.int32(step)}
        checkpoints.save(step, state, {"position": step, "rows": [step, "abc"]}, loss)
    checkpoints.wait()
    assert sorted(checkpoints.manager.all_steps()) == [2, 4, 5]
    abstract = jax.eval_shape(lambda: {"params": {"w": jnp.zeros(3)}, "step": jnp.int32(0)})
    state, data_state = checkpoints.restore(2, abstract)
    checkpoints.close()
    np.testing.assert_array_equal(state["params"]["w"], [2.0, 2.0, 2.0])
    assert int(state["step"]) == 2
    assert data_state == {"position": 2, "rows": [2, "abc"]}


def test_the_best_checkpoint_survives_a_resume(tmp_path):
    """A resumed run (a new manager over the same folder) still knows which step had the best
    held-out loss, and keeps it while later saves drop the others."""

    def save(checkpoints, step, loss):
        state = {"params": {"w": jnp.full(3, float(step))}, "step": jnp.int32(step)}
        checkpoints.save(step, state, {"position": step}, loss)

    options = dict(keep=1, keep_best=True, async_save=False, per_process_data=False)
    checkpoints = RunCheckpoints(tmp_path, **options)
    for step, loss in ((1, 3.0), (2, 1.0), (3, 2.0)):
        save(checkpoints, step, loss)
    checkpoints.close()
    resumed = RunCheckpoints(tmp_path, **options)
    for step, loss in ((4, None), (5, 5.0), (6, None)):
        save(resumed, step, loss)
    assert sorted(resumed.manager.all_steps()) == [2, 6]
    resumed.close()


def test_data_state_of_another_process_count_is_refused(tmp_path):
    """Named as such, not mistaken for a damaged checkpoint (which would be set aside)."""
    from jaxslm.errors import JaxslmError

    checkpoints = RunCheckpoints(
        tmp_path, keep=2, keep_best=False, async_save=False, per_process_data=True
    )
    state = {"params": {"w": jnp.zeros(3)}, "step": jnp.int32(1)}
    checkpoints.save(1, state, {"position": 1})
    data_dir = checkpoints.directory / "1" / "data"
    (data_dir / "process_0-of-1.json").rename(data_dir / "process_0-of-2.json")
    abstract = jax.eval_shape(lambda: state)
    with pytest.raises(JaxslmError, match="same number of processes"):
        checkpoints.restore_latest(abstract)
    checkpoints.close()
    assert (checkpoints.directory / "1").is_dir()


def two_checkpoints(tmp_path, newest_shape=(3,)) -> RunCheckpoints:
    """Steps 1 (w of shape (3,)) and 2 (w of `newest_shape`)."""
    checkpoints = RunCheckpoints(
        tmp_path, keep=2, keep_best=False, async_save=False, per_process_data=False
    )
    for step, shape in ((1, (3,)), (2, newest_shape)):
        state = {"params": {"w": jnp.full(shape, float(step))}, "step": jnp.int32(step)}
        checkpoints.save(step, state, {"position": step})
    return checkpoints


ABSTRACT = jax.eval_shape(lambda: {"params": {"w": jnp.zeros(3)}, "step": jnp.int32(0)})


def assert_nothing_moved(checkpoints):
    assert sorted(checkpoints.manager.all_steps()) == [1, 2]
    assert not (checkpoints.directory.parent / "damaged_checkpoints").exists()


def test_a_checkpoint_of_another_shape_is_refused_not_set_aside(tmp_path):
    """A newest checkpoint saved for another model (a changed vocabulary) is named with the
    parameter and both shapes, and kept: the older one is not silently resumed from."""
    from jaxslm.errors import JaxslmError

    checkpoints = two_checkpoints(tmp_path, newest_shape=(4,))
    message = r"params\.w has shape \(4,\) in the checkpoint, \(3,\) in the model.*corpus changed"
    with pytest.raises(JaxslmError, match=message):
        checkpoints.restore_latest(ABSTRACT)
    assert_nothing_moved(checkpoints)
    checkpoints.close()


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        OSError(errno.EIO, "Input/output error"),
        ValueError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.00GiB"),
    ],
    ids=["memory", "io", "xla-oom"],
)
def test_an_error_that_is_not_damage_moves_nothing(tmp_path, error):
    from jaxslm.errors import JaxslmError

    checkpoints = two_checkpoints(tmp_path)
    restore = checkpoints.manager.restore

    def failing(step, *args, **kwargs):
        if step == 2:
            raise error
        return restore(step, *args, **kwargs)

    checkpoints.manager.restore = failing
    with pytest.raises(JaxslmError, match=r"checkpoints/2 failed: .*no sign of damage"):
        checkpoints.restore_latest(ABSTRACT)
    assert_nothing_moved(checkpoints)
    checkpoints.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_truncated_array_file_still_falls_back(tmp_path):
    checkpoints = two_checkpoints(tmp_path)
    files = [p for p in (checkpoints.directory / "2" / "params").rglob("*") if p.is_file()]
    os.truncate(max(files, key=lambda p: p.stat().st_size), 10)
    with pytest.warns(UserWarning) as warned:
        step, state, _ = checkpoints.restore_latest(ABSTRACT)
    checkpoints.close()
    messages = [str(w.message) for w in warned]
    assert "checkpoints/2 is damaged" in messages[0]
    assert "moved the damaged checkpoint" in messages[1]
    assert step == 1
    np.testing.assert_array_equal(state["params"]["w"], [1.0, 1.0, 1.0])
    assert (checkpoints.directory.parent / "damaged_checkpoints" / "2").is_dir()


def test_model_parameters_of_another_shape_are_named(tmp_path):
    """jaxslm.load, evaluate, DPO's reference (restore_params) and export-hf (restore_param)
    name the mismatch rather than calling the parameters damaged."""
    import orbax.checkpoint as ocp

    from jaxslm.errors import JaxslmError
    from jaxslm.model_dir import abstract_params, restore_param, restore_params
    from jaxslm.models.model_config import ModelConfig

    shape = dict(hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2, num_kv_heads=1)
    saved = ModelConfig(
        family="llama", vocab_size=640, head_dim=8, tie_word_embeddings=True, **shape
    )
    params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), abstract_params(saved))
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as checkpointer:
        checkpointer.save(tmp_path / "params", args=ocp.args.PyTreeSave(params))
    grown = saved.replace(vocab_size=768)
    message = r"embed\.embedding has shape \(640, 16\) in the checkpoint, \(768, 16\) in the model"
    with pytest.raises(JaxslmError, match=message + ".*jaxslm.json"):
        restore_params(tmp_path, grown)
    with pytest.raises(JaxslmError, match=message):
        restore_param(tmp_path / "params", grown, ("embed", "embedding"))
    assert restore_param(tmp_path / "params", saved, ("embed", "embedding")).shape == (640, 16)


def test_a_nan_held_out_loss_is_never_the_best(tmp_path):
    checkpoints = RunCheckpoints(
        tmp_path, keep=1, keep_best=True, async_save=False, per_process_data=False
    )
    for step, loss in ((1, 2.0), (2, float("nan")), (3, 3.0), (4, None)):
        state = {"params": {"w": jnp.full(3, float(step))}, "step": jnp.int32(step)}
        checkpoints.save(step, state, {"position": step}, loss)
    assert sorted(checkpoints.manager.all_steps()) == [1, 4]
    checkpoints.close()
