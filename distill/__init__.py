"""SnapFlow distillation (installed as ``snapflow_distill``); imports without ROS."""
