"""Kronecker-factored linear layers (KroneckerBERT, Tahaei et al. 2022).

A weight W ∈ R^{(o1·o2)×(i1·i2)} is replaced by W = A ⊗ B with A ∈ R^{o1×i1}, B ∈ R^{o2×i2}:
o1·i1 + o2·i2 parameters instead of o1·o2·i1·i2. With x reshaped row-major to X ∈ R^{i1×i2},

    (A ⊗ B) x = vec(A X Bᵀ),

so the layer runs as two small matmuls and never materialises A ⊗ B.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from pet_fairseq.core.errors import ConfigError


def kronecker_factor_shapes(out_features: int, in_features: int,
                            a_shape: Tuple[int, int]) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """Shapes of A and B for a (out × in) weight with A of shape ``a_shape``; a clear error if they do not divide."""
    o1, i1 = a_shape
    if o1 <= 0 or i1 <= 0 or out_features % o1 or in_features % i1:
        raise ConfigError(
            f"Kronecker factor A of shape {o1}x{i1} does not divide a {out_features}x{in_features} weight: "
            f"choose A's rows dividing {out_features} and columns dividing {in_features}"
        )
    return (o1, i1), (out_features // o1, in_features // i1)


class KroneckerLinear(nn.Module):
    """y = x (A ⊗ B)ᵀ + b, computed as vec(A X Bᵀ) + b (see the module docstring)."""

    def __init__(self, in_features: int, out_features: int, a_shape: Tuple[int, int], bias: bool = True) -> None:
        super().__init__()
        (o1, i1), (o2, i2) = kronecker_factor_shapes(out_features, in_features, a_shape)
        self.in_features, self.out_features = in_features, out_features
        self.a = nn.Parameter(torch.empty(o1, i1))
        self.b = nn.Parameter(torch.empty(o2, i2))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal scale for the product: std(A ⊗ B) = std(A)·std(B) = sqrt(2 / (in + out))."""
        std = math.sqrt(math.sqrt(2.0 / (self.in_features + self.out_features)))
        nn.init.normal_(self.a, std=std)
        nn.init.normal_(self.b, std=std)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @classmethod
    def from_dense(cls, weight: Tensor, a_shape: Tuple[int, int], bias: Optional[Tensor] = None) -> "KroneckerLinear":
        """The nearest Kronecker product to ``weight`` in Frobenius norm (Van Loan & Pitsianis 1993).

        Rearranging W so that R[(p, q), (r, s)] = A[p, q]·B[r, s] turns the problem into the best
        rank-1 approximation R ≈ σ₁ u₁ v₁ᵀ: A = √σ₁ u₁, B = √σ₁ v₁, error² = Σ_{k≥2} σ_k².
        """
        out_features, in_features = weight.shape
        (o1, i1), (o2, i2) = kronecker_factor_shapes(out_features, in_features, a_shape)
        layer = cls(in_features, out_features, a_shape, bias=bias is not None)
        u, s, vh = torch.linalg.svd(rearrange_for_kronecker(weight.detach().float(), (o1, i1)), full_matrices=False)
        with torch.no_grad():
            root = s[0].sqrt()
            layer.a.copy_((root * u[:, 0]).reshape(o1, i1))
            layer.b.copy_((root * vh[0]).reshape(o2, i2))
            if bias is not None:
                layer.bias.copy_(bias.detach())
        return layer.to(weight.dtype)

    @property
    def a_shape(self) -> Tuple[int, int]:
        return tuple(self.a.shape)

    def dense_weight(self) -> Tensor:
        """A ⊗ B (for export and tests; forward never builds it)."""
        return torch.kron(self.a, self.b)

    def forward(self, x: Tensor) -> Tensor:
        (o1, i1), (o2, i2) = self.a.shape, self.b.shape
        y = torch.matmul(self.a, x.reshape(*x.shape[:-1], i1, i2) @ self.b.t())  # (..., o1, o2)
        y = y.reshape(*x.shape[:-1], o1 * o2)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, A={tuple(self.a.shape)}, B={tuple(self.b.shape)}"


def rearrange_for_kronecker(weight: Tensor, a_shape: Tuple[int, int]) -> Tensor:
    """R with R[p·i1 + q, r·i2 + s] = W[p·o2 + r, q·i2 + s], so A ⊗ B ↦ vec(A) vec(B)ᵀ."""
    out_features, in_features = weight.shape
    (o1, i1), (o2, i2) = kronecker_factor_shapes(out_features, in_features, a_shape)
    return weight.reshape(o1, o2, i1, i2).permute(0, 2, 1, 3).reshape(o1 * i1, o2 * i2)


def parse_factor_shape(text: str, option: str) -> Optional[Tuple[int, int]]:
    """``"4,4"`` -> (4, 4); empty -> None (no factoring)."""
    if not text:
        return None
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"{option} {text!r}: give the shape of the Kronecker factor A as ROWS,COLS, e.g. 4,4")
    return int(parts[0]), int(parts[1])


def factor_linear(linear: nn.Module, a_shape: Tuple[int, int]) -> KroneckerLinear:
    """A fresh KroneckerLinear with the same in/out features and bias presence as ``linear``."""
    return KroneckerLinear(linear.in_features, linear.out_features, a_shape, bias=linear.bias is not None)


def factor_layer(layer: nn.Module, ffn: Optional[Tuple[int, int]], attention: Optional[Tuple[int, int]]) -> None:
    """Replace a fairseq Transformer layer's FFN and/or attention projections by KroneckerLinear.

    Attention modules then take fairseq's general (non-fused) path, which calls the projections
    as modules instead of reading their ``weight``.
    """
    if ffn is not None:
        layer.fc1, layer.fc2 = factor_linear(layer.fc1, ffn), factor_linear(layer.fc2, ffn)
    if attention is not None:
        for attn in (getattr(layer, "self_attn", None), getattr(layer, "encoder_attn", None)):
            if attn is None:
                continue
            for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
                setattr(attn, name, factor_linear(getattr(attn, name), attention))
            attn._set_skip_embed_dim_check()


class KroneckerEmbedding(nn.Module):
    """Token embeddings E = A ⊗ B (V × d) with A: v1 × d1 and B: (V/v1) × (d/d1).

    Row t of E is A[t // v2] ⊗ B[t mod v2], gathered without building E; the padding row is
    zero, as in fairseq's ``Embedding``.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int, a_shape: Tuple[int, int]) -> None:
        super().__init__()
        (v1, d1), (v2, d2) = kronecker_factor_shapes(num_embeddings, embedding_dim, a_shape)
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        std = math.sqrt(embedding_dim**-0.5)  # fairseq's N(0, d^-1/2) for the product
        self.a = nn.Parameter(torch.randn(v1, d1) * std)
        self.b = nn.Parameter(torch.randn(v2, d2) * std)

    def forward(self, tokens: Tensor) -> Tensor:
        v2 = self.b.size(0)
        rows = self.a[tokens // v2].unsqueeze(-1) * self.b[tokens % v2].unsqueeze(-2)
        rows = rows.reshape(*tokens.shape, self.embedding_dim)
        return rows.masked_fill(tokens.eq(self.padding_idx).unsqueeze(-1), 0.0)

    def dense_weight(self) -> Tensor:
        weight = torch.kron(self.a, self.b)
        return weight.index_fill(0, torch.tensor([self.padding_idx], device=weight.device), 0.0)


class TiedKroneckerOutputProjection(nn.Module):
    """Logits x Eᵀ for a Kronecker embedding E = A ⊗ B: the tied output projection, no new parameters."""

    def __init__(self, embedding: KroneckerEmbedding) -> None:
        super().__init__()
        self.__dict__["embedding"] = embedding  # registered once, by the decoder's embed_tokens

    def forward(self, x: Tensor) -> Tensor:
        emb = self.embedding
        (v1, d1), (v2, d2) = emb.a.shape, emb.b.shape
        logits = torch.matmul(emb.a, x.reshape(*x.shape[:-1], d1, d2) @ emb.b.t())  # (..., v1, v2)
        return logits.reshape(*x.shape[:-1], v1 * v2)
