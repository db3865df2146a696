"""portraitrig.eval: metrics and reports.

identity (dlib embeddings, verification), image (PSNR/SSIM, masked), rig (consistency of
re-fitted parameters), video (jitter, flicker), distribution (Fréchet identity distance — not
FID), report (metrics.json + self-contained report.html), results (``portraitrig eval`` on a
results folder; layout in its docstring and docs/eval.md).
"""
from portraitrig.eval.distribution import frechet_distance, frechet_identity_distance, gaussian_stats
from portraitrig.eval.identity import (SAME_PERSON_THRESHOLD, FaceEmbedding, IdentityEncoder,
                                       equal_error_rate, identity_distance, identity_similarity,
                                       roc_auc, roc_curve, verify)
from portraitrig.eval.image import image_metrics, psnr, ssim, ssim_map
from portraitrig.eval.report import render_html, write_report
from portraitrig.eval.results import evaluate_folder, read_items
from portraitrig.eval.rig import (expression_error, gaze_error, light_error, pose_error, rig_consistency,
                                  rig_floor, rig_report, summarize)
from portraitrig.eval.video import flicker, landmark_jitter, static_mask_from_boxes

__all__ = ["frechet_distance", "frechet_identity_distance", "gaussian_stats", "SAME_PERSON_THRESHOLD",
           "FaceEmbedding", "IdentityEncoder", "equal_error_rate", "identity_distance",
           "identity_similarity", "roc_auc", "roc_curve", "verify", "image_metrics", "psnr", "ssim",
           "ssim_map", "render_html", "write_report", "evaluate_folder", "read_items",
           "expression_error", "gaze_error", "light_error", "pose_error", "rig_consistency",
           "rig_floor", "rig_report", "summarize", "flicker", "landmark_jitter",
           "static_mask_from_boxes"]
