"""The same logits on an 8-device CPU mesh (data=2, fsdp=2, tensor=2) as on one device."""

import jax
import numpy as np

import jaxslm
from jaxslm.sharding import make_mesh


def test_sharded_logits_equal_single_device(qwen_ckpt, qwen_lm):
    assert len(jax.devices()) >= 8
    mesh = make_mesh(data=2, fsdp=2, tensor=2, devices=jax.devices()[:8])
    sharded = jaxslm.load(qwen_ckpt, mesh=mesh)
    kernel = sharded._params["layers"]["attn"]["q"]["kernel"][...]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
    assert len(kernel.addressable_shards) == 8
    tokens = np.random.default_rng(7).integers(0, qwen_lm.vocab.size, size=(4, 24))
    np.testing.assert_allclose(sharded.logits(tokens), qwen_lm.logits(tokens), atol=1e-5, rtol=1e-5)
