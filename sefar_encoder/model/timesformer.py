"""TimeSformer backbone (divided space-time attention) shared by all views of a clip.

Shape notation: B batch, V views, T frames of one view, S = sum of view frames (all views of a clip),
C channels, H/W pixels, N patch tokens per frame, M = 1 + N tokens per frame (CLS first), D width.

All views of a clip go through ONE backbone call::

    video [B, C, S, H, W]   frames 0..T0-1 = view 0, then view 1, ... (each view in temporal order)
       │ patch embed per frame                      -> [B, S, N, D]
       │ (optional TubeTokenMix, same mask every frame)
       │ + spatial pos, + per-frame CLS, + per-view time embedding
       ▼                                            -> [B, S, M, D]
    blocks × depth:
       temporal attention   per token position, over the frames of ONE view (views never mix)
       spatial attention    per frame, over [CLS_t, patches_t]
       MLP                  per token
       ▼
    final norm -> f_v = mean over the frames of view v of the per-frame CLS   -> [B, V, D]

Frame stem (``frame_blocks = k > 0``): the first k blocks have no temporal branch, so their output
depends on one frame alone and the time embedding is added after them. ``forward_frames`` runs patch
embedding and those k blocks (the *frame tokens*, ``[B, S, M, D]``); ``forward`` accepts either a video
or such frame tokens, so frame tokens computed once and cached (``sefar_encoder.token_cache``) give the
same result as the video itself. TubeTokenMix then mixes the frame tokens' patch positions (after the
stem) instead of the patch embeddings; with k = 0 both places are the same.

CLS handling (our variant, documented deviation from TimeSformer): TimeSformer keeps one CLS token per
clip, lets every frame's spatial attention read it and overwrites it with the average of the per-frame
CLS outputs after every block. We keep one CLS token *per frame* instead; the per-frame CLS tokens take
part in temporal attention (so they exchange information across the frames of their view, like every
other token position) and the view feature is the mean of the normalised per-frame CLS tokens.
Why: with the temporal projection initialised at zero, every frame then goes through exactly the
computation of the image ViT it was loaded from — for any frames, not only for constant videos — so
at initialisation ``f_v`` equals the frame-averaged image-ViT feature (the "framepool" baseline) and
training only adds temporal interactions on top. The cost is S - V extra tokens, negligible next to
S * N patch tokens.
"""

from __future__ import annotations

import torch
from timm.layers import Attention, DropPath, Mlp, PatchEmbed, trunc_normal_
from torch import nn

from .token_mix import MixSpec

# timm's ViTs use LayerNorm(eps=1e-6); the same eps keeps loaded image weights bit-compatible.
LN_EPS = 1e-6


class ViewGroups(nn.Module):
    """Which frames belong to which view, grouped so that views of equal length share one attention call.

    Temporal attention must stay inside a view. Rather than one call over all S frames with a
    block-diagonal mask (scores for S^2 pairs, and SDPA leaves its mask-free fast path), views of equal
    length are stacked into the batch dimension: with views (2, 2, 4) that is one call on 2-frame
    sequences (views 0 and 1) and one on 4-frame sequences (view 2), computing exactly sum_v T_v^2 scores.
    Measured on this CPU (B=32, D=192, M=17 and 65): the two are within noise of each other, so we keep
    the one that does the least work and needs no mask; with equal views ((8,), (4, 4)) it is a pure reshape.

    A parameter-free module so that its index tensors (non-persistent buffers) follow ``.to(device)``.
    """

    def __init__(self, views: tuple[int, ...]) -> None:
        super().__init__()
        if not views or any(int(t) < 1 for t in views):
            raise ValueError(f"views must be a non-empty tuple of positive frame counts, got {views}")
        self.views = tuple(int(t) for t in views)
        self.num_frames = sum(self.views)
        starts = [sum(self.views[:i]) for i in range(len(self.views))]
        lengths = list(dict.fromkeys(self.views))  # distinct lengths, in order of first appearance
        # per group: (view length L, number of views n, first frame if the group is contiguous else None)
        self.specs: list[tuple[int, int, int | None]] = []
        order: list[int] = []
        for g, length in enumerate(lengths):
            members = [v for v, t in enumerate(self.views) if t == length]
            frames = [starts[v] + i for v in members for i in range(length)]
            contiguous = frames == list(range(frames[0], frames[0] + len(frames)))
            self.specs.append((length, len(members), frames[0] if contiguous else None))
            self.register_buffer(f"frames_{g}", torch.tensor(frames), persistent=False)
            order += frames
        self.identity = order == list(range(self.num_frames))
        self.register_buffer("inverse", torch.argsort(torch.tensor(order)), persistent=False)
        # [V, S] averaging matrix: row v holds 1/T_v on the frames of view v
        pool = torch.zeros(len(self.views), self.num_frames)
        for v, (s, t) in enumerate(zip(starts, self.views)):
            pool[v, s : s + t] = 1.0 / t
        self.register_buffer("pool", pool, persistent=False)

    def select(self, x: torch.Tensor, g: int) -> torch.Tensor:
        """Frames of group ``g`` (views in order): ``[B, S, ...] -> [B, n*L, ...]``."""
        length, n_views, first = self.specs[g]
        if first is not None:
            return x[:, first : first + n_views * length]  # contiguous: a view, no copy
        return x.index_select(1, getattr(self, f"frames_{g}"))

    def restore(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """Concatenate per-group results and put the frames back in clip order: ``-> [B, S, ...]``."""
        y = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return y if self.identity else y.index_select(1, self.inverse)


class DividedBlock(nn.Module):
    """Temporal attention (within each view) -> spatial attention (per frame) -> MLP, as in TimeSformer.

    Parameter names of the spatial part equal timm's ``Block`` (``norm1``, ``attn``, ``norm2``, ``mlp``)
    so image-ViT checkpoints map one to one; the temporal part is ``norm_t``, ``attn_t`` and the
    zero-initialised output projection ``proj_t`` (TimeSformer's ``temporal_fc``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        temporal: bool = True,
    ) -> None:
        super().__init__()
        # temporal=False: a frame-stem block, exactly timm's image Block (no temporal parameters at all)
        self.has_temporal = temporal
        if temporal:
            self.norm_t = nn.LayerNorm(dim, eps=LN_EPS)
            self.attn_t = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias)
            self.proj_t = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)
        # One DropPath per residual branch; shapes keep B first, so a whole clip (all its views) is
        # dropped together. TimeSformer drops per (clip, token position) in the temporal branch — an
        # artefact of its reshape, not a design choice.
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def temporal(self, x: torch.Tensor, groups: ViewGroups) -> torch.Tensor:
        """Self-attention over the frames of each view, independently per token position."""
        B, _, M, D = x.shape
        y = self.norm_t(x)
        parts = []
        for g, (length, n_views, _) in enumerate(groups.specs):
            xg = groups.select(y, g)  # [B, n*L, M, D]
            xg = xg.reshape(B, n_views, length, M, D).permute(0, 1, 3, 2, 4)  # [B, n, M, L, D]
            yg = self.attn_t(xg.reshape(B * n_views * M, length, D))  # [B*n*M, L, D]
            yg = yg.reshape(B, n_views, M, length, D).permute(0, 1, 3, 2, 4)  # [B, n, L, M, D]
            parts.append(yg.reshape(B, n_views * length, M, D))
        return self.proj_t(groups.restore(parts))  # [B, S, M, D]

    def forward(self, x: torch.Tensor, groups: ViewGroups) -> torch.Tensor:
        # x: [B, S, M, D]
        B, S, M, D = x.shape
        if self.has_temporal:
            x = x + self.drop_path(self.temporal(x, groups))
        y = self.attn(self.norm1(x).reshape(B * S, M, D)).reshape(B, S, M, D)
        x = x + self.drop_path(y)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class TimeSformer(nn.Module):
    """ViT with divided space-time attention; every view has its own temporal position embedding.

    ``forward(video, mix) -> tokens [B, S, M, D]`` after the final norm (index 0 of each frame is that
    frame's CLS token); :meth:`pool_views` turns them into per-view features ``[B, V, D]``.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        views: tuple[int, ...] = (2, 2, 4),
        frame_blocks: int = 0,
    ) -> None:
        super().__init__()
        if not 0 <= frame_blocks < depth:
            raise ValueError(f"frame_blocks must be in [0, depth={depth}), got {frame_blocks}")
        self.frame_blocks = frame_blocks
        self.groups = ViewGroups(tuple(views))
        self.views = self.groups.views
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim
        )
        self.grid_size: tuple[int, int] = tuple(self.patch_embed.grid_size)
        num_patches = self.patch_embed.num_patches
        # timm layout: one learned CLS token and a [1, 1 + N, D] position table whose entry 0 is the CLS's.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, embed_dim))
        # One temporal position table per view ([T_v, D], zero at init): the fine and coarse views sample
        # different moments of the clip, so "frame 1 of view 0" and "frame 1 of view 2" are different times.
        self.time_embeds = nn.ParameterList([nn.Parameter(torch.zeros(t, embed_dim)) for t in self.views])
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            DividedBlock(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_path=r,
                temporal=i >= frame_blocks,
            )
            for i, r in enumerate(rates)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=LN_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)  # timm's ViT init
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.zero_temporal_projections()

    def zero_temporal_projections(self) -> None:
        """Zero every ``proj_t``: the temporal branch then adds nothing and each frame is an image ViT."""
        for block in self.blocks[self.frame_blocks :]:
            nn.init.zeros_(block.proj_t.weight)
            nn.init.zeros_(block.proj_t.bias)

    @property
    def num_patches(self) -> int:
        return self.patch_embed.num_patches

    def embed(self, video: torch.Tensor) -> torch.Tensor:
        """Patch-embed every frame: ``[B, C, S, H, W] -> [B, S, N, D]`` (any S: frames are independent)."""
        if video.ndim != 5:
            raise ValueError(f"expected video [B, C, S, H, W], got shape {tuple(video.shape)}")
        B, C, S, H, W = video.shape
        frames = video.transpose(1, 2).reshape(B * S, C, H, W)
        return self.patch_embed(frames).reshape(B, S, self.num_patches, self.embed_dim)

    def forward_frames(self, video: torch.Tensor, mix: MixSpec | None = None) -> torch.Tensor:
        """``video [B, C, S, H, W]`` -> frame tokens ``[B, S, M, D]`` after the frame stem (un-normalised;
        with ``frame_blocks = 0`` the embedded tokens). Each frame's tokens depend on that frame alone.

        ``mix`` (only without a frame stem) is applied right after patch embedding: position embeddings
        are equal for both partners at every position, so mixing before or after adding them is the same.
        """
        x = self.embed(video)  # [B, S, N, D]
        if mix is not None:
            x = mix.apply(x)
        B, S, _, D = x.shape
        x = x + self.pos_embed[:, 1:].unsqueeze(1)  # [1, 1, N, D]
        cls = (self.cls_token + self.pos_embed[:, :1]).unsqueeze(1).expand(B, S, 1, D)
        x = torch.cat([cls, x], dim=2)  # [B, S, M, D]
        for block in self.blocks[: self.frame_blocks]:
            x = block(x, self.groups)
        return x

    def forward(self, x: torch.Tensor, mix: MixSpec | None = None) -> torch.Tensor:
        """``video [B, C, S, H, W]`` or frame tokens ``[B, S, M, D]`` (:meth:`forward_frames`) ->
        normalised tokens ``[B, S, M, D]`` (CLS at index 0 of each frame).

        ``mix`` is a :class:`~sefar_encoder.model.token_mix.MixSpec` over the patch positions: applied
        after patch embedding without a frame stem, else to the frame tokens' patches (CLS kept).
        """
        given = tuple(x.shape)
        if x.ndim == 5:
            if self.frame_blocks == 0:  # mixed right after patch embedding
                x, mix = self.forward_frames(x, mix=mix), None
            else:
                x = self.forward_frames(x)
        if x.ndim != 4 or x.shape[1:] != (self.groups.num_frames, 1 + self.num_patches, self.embed_dim):
            raise ValueError(
                f"views {self.views} need {self.groups.num_frames} frames: a video [B, C, "
                f"{self.groups.num_frames}, H, W] or its frame tokens [B, {self.groups.num_frames}, "
                f"{1 + self.num_patches}, {self.embed_dim}]; got {given}"
            )
        if mix is not None:
            x = torch.cat([x[:, :, :1], mix.apply(x[:, :, 1:])], dim=2)  # patch positions only, CLS kept
        time = torch.cat(list(self.time_embeds), dim=0)  # [S, D], views in order
        x = x + time[None, :, None, :]
        for block in self.blocks[self.frame_blocks :]:
            x = block(x, self.groups)
        return self.norm(x)

    def frame_stem_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Parameters that :meth:`forward_frames` uses (names relative to this module)."""
        stem = ("patch_embed.", "cls_token", "pos_embed") + tuple(
            f"blocks.{i}." for i in range(self.frame_blocks)
        )
        return [(n, p) for n, p in self.named_parameters() if n.startswith(stem)]

    def pool_views(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-view features ``f_v`` = mean over the view's frames of the normalised CLS: ``[B, V, D]``."""
        return torch.einsum("vs,bsd->bvd", self.groups.pool.to(tokens.dtype), tokens[:, :, 0])

    def no_weight_decay(self) -> set[str]:
        """Embeddings, norms and biases (names relative to this module)."""
        names = {"cls_token", "pos_embed"} | {f"time_embeds.{i}" for i in range(len(self.views))}
        return names | {n for n, p in self.named_parameters() if p.ndim <= 1}
