"""Tiny test models (not a test module): every site kind lowprec.quantize_model handles."""
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

D = 16


class RawProj(nnx.Module):
    """A user layer: a parameter and a raw jnp.einsum in __call__."""

    def __init__(self, rngs):
        self.w = nnx.Param(nnx.initializers.normal(0.3)(rngs.params(), (D, D)))

    def __call__(self, x):
        return jnp.einsum("btd,de->bte", x, self.w[...])


class Block(nnx.Module):
    def __init__(self, rngs):
        self.attn = nnx.MultiHeadAttention(num_heads=2, in_features=D, qkv_features=2 * D, decode=False, rngs=rngs)
        self.up = nnx.Linear(D, 2 * D, rngs=rngs)
        self.gate = nnx.LinearGeneral(D, (2, D), rngs=rngs)
        self.down = nnx.Einsum("btf,fd->btd", (2 * D, D), rngs=rngs)
        self.mix = RawProj(rngs)

    def __call__(self, x):
        x = x + self.attn(x)
        h = self.up(x) * self.gate(x).reshape(x.shape[:-1] + (2 * D,))
        return x + self.down(h) + self.mix(x)


class Model(nnx.Module):
    def __init__(self, rngs, n=3):
        self.blocks = nnx.List([Block(rngs) for _ in range(n)])

    def __call__(self, x):
        for b in self.blocks:
            x = b(x)
        return x


class LinenBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(2 * D, name="up")(x)
        w = self.param("w", nn.initializers.normal(0.3), (2 * D, D))
        y = jnp.einsum("btf,fd->btd", h, w)
        return x + y + nn.Einsum((D, D), "btd,de->bte", name="mix")(x)


class LinenModel(nn.Module):
    @nn.compact
    def __call__(self, x):
        for i in range(3):
            x = LinenBlock(name=f"blocks_{i}")(x)
        return x


def inputs(seed=1):
    return jax.random.normal(jax.random.key(seed), (2, 8, D))


def nvfp4_rules():
    import lowprec as lp

    return [lp.Rule(path="^blocks/0/", recipe="bf16"), lp.Rule(path="^blocks/2/", recipe="bf16"),
            lp.Rule(path=".*", recipe="nvfp4")]
