"""Flax linen building blocks shared by the model families."""

from dgm_jax.nn.embeddings import GaussianFourierEmbedding, sinusoidal_embedding
from dgm_jax.nn.init import init_params
from dgm_jax.nn.mlp import MLP, TimeConditionedMLP
from dgm_jax.nn.unet import UNET_MNIST_5M, AttentionBlock, ResBlock, UNet
from dgm_jax.nn.vae_nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from dgm_jax.nn.vq_nets import ResidualStack, VQDecoder, VQEncoder

__all__ = [
    "MLP",
    "UNET_MNIST_5M",
    "AttentionBlock",
    "ConvDecoder",
    "ConvEncoder",
    "GaussianFourierEmbedding",
    "MLPDecoder",
    "MLPEncoder",
    "ResBlock",
    "ResidualStack",
    "TimeConditionedMLP",
    "UNet",
    "VQDecoder",
    "VQEncoder",
    "init_params",
    "sinusoidal_embedding",
]
