"""Run checkpoints keep the latest N plus the best held-out loss, and give back the train state
and the data-iterator state they were handed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxslm.training.run_checkpoints import RunCheckpoints


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
