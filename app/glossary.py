"""One-line explanations of the field's jargon, for the teaching audience.

Each term is explained where it first appears on a page (:func:`term`), and the Start page lists
them all (:func:`glossary_markdown`). Presentation only.
"""

from __future__ import annotations

GLOSSARY: dict[str, str] = {
    "pooling": "averaging a feature map over one axis (frames, or joints) so that axis disappears and what "
               "the remaining axis holds stays",
    "pooled": "obtained by pooling: here, the encoder's feature map averaged over frames (spatial) or over "
              "joints (temporal), with no learned weights",
    "L2-normalised": "divided by its length, so every embedding is a point on the unit sphere and only its "
                     "direction counts",
    "cosine": "the cosine of the angle between two embeddings: 1 when they point the same way, 0 when "
              "unrelated, negative when opposite",
    "InfoNCE": "a contrastive loss: minus the log of the share its positives get in a softmax over its "
               "positives and negatives (similarities divided by the temperature τ); low when the sample is "
               "closer to its positives than to its negatives",
    "P / K": "how many positives (P, samples of the same class) and negatives (K, of other classes) each "
             "sample is compared with in the contrastive loss; STD-CL uses P = 128 and K = 512",
    "memory bank": "a store of other samples' embeddings from earlier training steps, so each sample can be "
                   "compared with many more samples than one batch holds",
    "centroid": "the mean of a class's (normalised) embeddings: the direction that class points to on average",
    "Grad-CAM": "gradient-weighted class activation mapping: the encoder's last feature map weighted by how "
                "much each channel raises the class's score, showing where (joints) and when (frames) the "
                "evidence for that class sits",
    "UMAP": "a method that draws high-dimensional points in 2-D keeping each point's nearest neighbours "
            "near; distances between far-apart clusters mean little",
    "probe": "a fixed, class-stratified subset of samples that training embeds in every space at step 0 and at "
             "its evaluation epochs, so you can see how the spaces formed",
}


def term(name: str) -> str:
    """``name`` in bold followed by its explanation in parentheses, for the first use on a page."""
    return f"**{name}** ({GLOSSARY[name]})"


def glossary_markdown() -> str:
    """Every term as a Markdown list."""
    return "\n".join(f"- **{k}**: {v}." for k, v in GLOSSARY.items())
