"""Training data as the core sees it: the (observation, action chunk) sample types that bags,
LeRobot datasets and the synthetic task produce, and the synthetic reaching scene itself.
The training loop that consumes them lives in snapflow_distill."""
