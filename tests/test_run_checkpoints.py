"""Run checkpoints keep the latest N plus the best held-out loss, and give back the train state
and the data-iterator state they were handed."""

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
