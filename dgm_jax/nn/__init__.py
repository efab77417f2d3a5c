"""Flax linen building blocks shared by the model families."""

from dgm_jax.nn.embeddings import GaussianFourierEmbedding, sinusoidal_embedding
from dgm_jax.nn.mlp import MLP, TimeConditionedMLP

__all__ = ["MLP", "GaussianFourierEmbedding", "TimeConditionedMLP", "sinusoidal_embedding"]
