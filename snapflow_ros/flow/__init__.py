"""Flow-matching math shared by every policy family: time embeddings and sampling.

Convention (LeRobot pi0/pi0.5/SmolVLA): t = 1 is pure noise, t = 0 is the action chunk;
x_t = t * eps + (1 - t) * a and the velocity target is eps - a.
"""
