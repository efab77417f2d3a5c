"""Flax linen building blocks shared by the model families."""

from dgm_jax.nn.embeddings import GaussianFourierEmbedding, sinusoidal_embedding
from dgm_jax.nn.mlp import MLP, TimeConditionedMLP
from dgm_jax.nn.unet import UNET_MNIST_5M, AttentionBlock, ResBlock, UNet

__all__ = [
    "MLP",
    "UNET_MNIST_5M",
    "AttentionBlock",
    "GaussianFourierEmbedding",
    "ResBlock",
    "TimeConditionedMLP",
    "UNet",
    "sinusoidal_embedding",
]
